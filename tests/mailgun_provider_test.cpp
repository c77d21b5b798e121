#include <catch2/catch.hpp>

#include "base64.h"
#include "email.h"
#include "http_provider.h"
#include "mailgun_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

TEST_CASE("Mailgun request matches the golden form", "[mailgun]") {
  json j = fakes::full_request();
  j["tags"] = {"invoice", "monthly"};
  MailgunProvider api("https://api.eu.mailgun.net/", "mg.example.com", "key-fake");
  HttpRequest r = api.build_request(parse_email(j.dump()).value(), "req-1");

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
      {"v:mailrelay_request_id", "req-1", "", ""},  // README "Delivery events and suppressions": events hand it back
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

// api-sending.rst, error codes: these say the domain or account cannot send, not that this
// message is wrong; README "Provider health and the retry budget" makes them `error` so that they count toward the circuit.
TEST_CASE("Mailgun: an unusable sending domain or account is an error, not a rejection", "[mailgun]") {
  MailgunProvider api("https://api.mailgun.net", "mg.example.com", "k");
  auto now = std::chrono::system_clock::now();
  auto [status, message, outcome] = GENERATE(table<long, std::string, AttemptOutcome>({
      {404, "Domain not found: example.com", AttemptOutcome::kError},
      {400, "Domain example.com is not allowed to send: The domain is unverified and requires DNS configuration.",
       AttemptOutcome::kError},
      {400, "Domain example.com is not allowed to send: Please activate your Mailgun account.", AttemptOutcome::kError},
      {400, "to parameter is not a valid address. please check documentation", AttemptOutcome::kRejected},
      {400, "'recipient-variables' parameter is not a valid JSON", AttemptOutcome::kRejected},
      {413, "request size exceeds 52.4MiB limit", AttemptOutcome::kRejected}}));
  CAPTURE(status, message);
  HttpResponse r{status, {}, json{{"message", message}}.dump()};
  auto a = interpret_response(api, r, now);
  CHECK(a.outcome == outcome);
  CHECK(a.error == message);
  CHECK_FALSE(a.may_have_been_sent);
}

TEST_CASE("Mailgun: a 429 says when to come back in its message, in seconds or as a date", "[mailgun]") {
  MailgunProvider api("https://api.mailgun.net", "mg.example.com", "k");
  auto now = std::chrono::system_clock::from_time_t(1640032371);  // Mon, 20 Dec 2021 20:32:51 UTC
  SECTION("openapi.yaml: \"try again after 120 seconds\"") {
    HttpResponse r{429, {}, R"({"message":"Domain example.com is not allowed to send: account-requests-per-sec limit exceeded, try again after 120 seconds"})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kError);
    CHECK(a.retry_after == std::chrono::milliseconds(120000));
  }
  SECTION("api-sending.rst: \"try again after Mon, 20 Dec 2021 20:33:21 UTC\"") {
    HttpResponse r{429, {}, R"({"message":"Domain example.com is not allowed to send: request limit exceeded, try again after Mon, 20 Dec 2021 20:33:21 UTC"})"};
    CHECK(interpret_response(api, r, now).retry_after == std::chrono::milliseconds(30000));
  }
  SECTION("Retry-After, when present, wins") {
    HttpResponse r{429, {{"retry-after", "5"}}, R"({"message":"limit exceeded, try again after 120 seconds"})"};
    CHECK(interpret_response(api, r, now).retry_after == std::chrono::milliseconds(5000));
  }
  SECTION("no signal: the one-second park every unnamed throttle gets") {
    HttpResponse r{429, {}, R"({"message":"slow down"})"};
    CHECK(interpret_response(api, r, now).retry_after == kUnnamedThrottlePark);
  }
}

TEST_CASE("Mailgun: inline images by content id, sandbox as o:testmode", "[mailgun]") {
  json j = fakes::sample_request();
  j["html"] = "<p><img src=\"cid:logo\"></p>";
  j["attachments"] = {{{"filename", "logo.png"}, {"content_type", "image/png"}, {"content", "iVBORw=="},
                       {"disposition", "inline"}, {"content_id", "logo"}},
                      {{"filename", "a.pdf"}, {"content", "JVBERi0x"}}};
  j["sandbox"] = true;
  MailgunProvider api("https://api.mailgun.net", "mg.example.com", "k");
  HttpRequest r = api.build_request(parse_email(j.dump()).value(), "req-2");
  std::vector<std::tuple<std::string, std::string, std::string>> files;
  for (const auto& f : r.form) {
    if (!f.filename.empty()) files.emplace_back(f.name, f.filename, f.content_type);
  }
  // user_manual.rst "Sending Inline Images": the inline file's name is its cid.
  CHECK(files == std::vector<std::tuple<std::string, std::string, std::string>>{
                     {"inline", "logo", "image/png"}, {"attachment", "a.pdf", "application/octet-stream"}});
  std::vector<std::string> testmode;
  for (const auto& f : r.form) {
    if (f.name == "o:testmode") testmode.push_back(f.value);
  }
  CHECK(testmode == std::vector<std::string>{"yes"});  // openapi.yaml o:testmode enum "yes"
}
