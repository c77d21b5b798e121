#include <catch2/catch.hpp>

#include "base64.h"
#include "email.h"
#include "http_provider.h"
#include "mailgun_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

TEST_CASE("Mailgun request matches the golden form", "[mailgun]") {
  json j = fakes::sample_request();
  j["to"][1] = {{"email", "bob@example.org"}, {"name", "Doe, Bob"}};
  j["cc"] = {"carol@example.org"};
  j["bcc"] = {"dave@example.org"};
  j["reply_to"] = "support@example.com";
  j["headers"] = {{"X-Campaign", "nov"}};
  j["attachments"] = {{{"filename", "a.pdf"}, {"content_type", "application/pdf"}, {"content", "JVBERi0x"}}};
  j["tags"] = {"invoice", "monthly"};
  j["metadata"] = {{"invoice_id", "42"}};
  MailgunProvider api("https://api.eu.mailgun.net/", "mg.example.com", "key-fake");
  HttpRequest r = api.build_request(parse_email(j.dump()).value());

  CHECK(r.url == "https://api.eu.mailgun.net/v3/mg.example.com/messages");
  CHECK(r.headers == std::vector<std::pair<std::string, std::string>>{
                         {"Authorization", "Basic " + base64_encode("api:key-fake")}});
  std::vector<std::tuple<std::string, std::string, std::string, std::string>> fields;
  for (const auto& f : r.form) fields.emplace_back(f.name, f.value, f.filename, f.content_type);
  std::vector<std::tuple<std::string, std::string, std::string, std::string>> golden = {
      {"from", "Billing <billing@example.com>", "", ""},
      {"to", "alice@example.org", "", ""},
      {"to", "\"Doe, Bob\" <bob@example.org>", "", ""},  // quoted: the comma would split it
      {"cc", "carol@example.org", "", ""},
      {"bcc", "dave@example.org", "", ""},
      {"subject", "Your invoice", "", ""},
      {"text", "plain body", "", ""},
      {"html", "<p>html body</p>", "", ""},
      {"h:Reply-To", "support@example.com", "", ""},
      {"h:X-Campaign", "nov", "", ""},
      {"o:tag", "invoice", "", ""},
      {"o:tag", "monthly", "", ""},
      {"v:invoice_id", "42", "", ""},
      {"attachment", "%PDF-1", "a.pdf", "application/pdf"},
  };
  CHECK(fields == golden);
}

TEST_CASE("Mailgun answers are interpreted", "[mailgun]") {
  MailgunProvider api("https://api.mailgun.net", "mg.example.com", "k");
  auto now = std::chrono::system_clock::now();
  SECTION("200 with id is sent") {
    HttpResponse r{200, {}, R"({"id":"<20261122.1@mg.example.com>","message":"Queued. Thank you."})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kSent);
    CHECK(a.message_id == "<20261122.1@mg.example.com>");
  }
  SECTION("401 plain-text Forbidden is an error with that text") {
    HttpResponse r{401, {{"content-type", "text/plain"}}, "Forbidden"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kError);
    CHECK(a.error == "Forbidden");
  }
  SECTION("400 JSON message is a rejection") {
    HttpResponse r{400, {}, R"({"message":"'to' parameter is not a valid address. please check documentation"})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kRejected);
    CHECK(a.error == "'to' parameter is not a valid address. please check documentation");
  }
  SECTION("an empty error body still says something") {
    HttpResponse r{502, {}, ""};
    CHECK(interpret_response(api, r, now).error == "HTTP 502");
  }
}
