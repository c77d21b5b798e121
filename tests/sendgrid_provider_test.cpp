#include <catch2/catch.hpp>

#include "base64.h"
#include "email.h"
#include "http_provider.h"
#include "sendgrid_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

namespace {
Email full_email() {
  json j = fakes::sample_request();
  j["cc"] = {"Carol <carol@example.org>"};
  j["bcc"] = {"dave@example.org"};
  j["reply_to"] = {{"email", "support@example.com"}, {"name", "Support"}};
  j["headers"] = {{"X-Campaign", "nov"}};
  j["attachments"] = {{{"filename", "a.pdf"}, {"content_type", "application/pdf"}, {"content", "JVBERi0x"}}};
  j["tags"] = {"invoice"};
  j["metadata"] = {{"invoice_id", "42"}};
  return parse_email(j.dump()).value();
}
}  // namespace

TEST_CASE("SendGrid request matches the golden v3 payload", "[sendgrid]") {
  SendGridProvider api("https://api.eu.sendgrid.com/", "SG.fake");
  HttpRequest r = api.build_request(full_email(), "req-1");
  CHECK(r.url == "https://api.eu.sendgrid.com/v3/mail/send");
  CHECK(r.content_type == "application/json");
  CHECK(r.headers == std::vector<std::pair<std::string, std::string>>{{"Authorization", "Bearer SG.fake"}});
  CHECK(r.form.empty());
  json golden = json::parse(R"({
    "personalizations": [{
      "to": [{"email": "alice@example.org"}, {"email": "bob@example.org", "name": "Bob"}],
      "cc": [{"email": "carol@example.org", "name": "Carol"}],
      "bcc": [{"email": "dave@example.org"}]
    }],
    "from": {"email": "billing@example.com", "name": "Billing"},
    "reply_to": {"email": "support@example.com", "name": "Support"},
    "subject": "Your invoice",
    "content": [{"type": "text/plain", "value": "plain body"}, {"type": "text/html", "value": "<p>html body</p>"}],
    "attachments": [{"content": "JVBERi0x", "filename": "a.pdf", "type": "application/pdf", "disposition": "attachment"}],
    "headers": {"X-Campaign": "nov"},
    "categories": ["invoice"],
    "custom_args": {"invoice_id": "42", "mailrelay_request_id": "req-1"}
  })");
  CHECK(json::parse(r.body) == golden);
}

TEST_CASE("SendGrid payload leaves out what the message does not use", "[sendgrid]") {
  SendGridProvider api("https://api.sendgrid.com", "k");
  json j = fakes::sample_request();
  j.erase("html");
  json body = json::parse(api.build_request(parse_email(j.dump()).value(), "req-1").body);
  CHECK(body["content"] == json::parse(R"([{"type":"text/plain","value":"plain body"}])"));
  CHECK(body["custom_args"] == json{{"mailrelay_request_id", "req-1"}});  // always: README "Delivery events and suppressions"
  for (const char* absent : {"reply_to", "attachments", "headers", "categories", "mail_settings"}) {
    CHECK_FALSE(body.contains(absent));
  }
  CHECK_FALSE(body["personalizations"][0].contains("cc"));  // SendGrid refuses empty cc/bcc arrays
  CHECK_FALSE(body["personalizations"][0].contains("bcc"));
}

TEST_CASE("SendGrid answers are interpreted", "[sendgrid]") {
  SendGridProvider api("https://api.sendgrid.com", "k");
  auto now = std::chrono::system_clock::now();
  SECTION("202 with X-Message-Id is sent") {
    HttpResponse r{202, {{"x-message-id", "abc123"}}, ""};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kSent);
    CHECK(a.message_id == "abc123");
  }
  SECTION("400 with the errors array is rejected, messages joined") {
    HttpResponse r{400, {}, R"({"errors":[{"message":"The from email does not contain a valid address.","field":"from.email","help":"http://sendgrid.com/docs"}]})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kRejected);
    CHECK(a.http_status == 400);
    CHECK(a.error == "The from email does not contain a valid address. (from.email)");
  }
  SECTION("401 is an error (credentials), not a rejection of the message") {
    HttpResponse r{401, {}, R"({"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null,"help":null}]})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kError);
    CHECK(a.error == "The provided authorization grant is invalid, expired, or revoked");
  }
  SECTION("429 carries Retry-After") {
    HttpResponse r{429, {{"retry-after", "7"}}, R"({"errors":[{"message":"too many requests"}]})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kError);
    CHECK(a.retry_after == std::chrono::milliseconds(7000));
  }
  SECTION("garbage error bodies are kept short and on one line") {
    HttpResponse r{503, {}, std::string("<html>\n") + std::string(500, 'x')};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kError);
    CHECK(a.error.size() <= 200);
    CHECK(a.error.find('\n') == std::string::npos);
  }
}

TEST_CASE("HTTP status classes", "[sendgrid]") {
  auto [status, outcome] = GENERATE(table<long, AttemptOutcome>({
      {200, AttemptOutcome::kSent}, {202, AttemptOutcome::kSent}, {400, AttemptOutcome::kRejected},
      {413, AttemptOutcome::kRejected}, {422, AttemptOutcome::kRejected}, {401, AttemptOutcome::kError},
      {403, AttemptOutcome::kError}, {408, AttemptOutcome::kError}, {429, AttemptOutcome::kError},
      {500, AttemptOutcome::kError}, {503, AttemptOutcome::kError}, {302, AttemptOutcome::kError}}));
  CAPTURE(status);
  CHECK(classify_http_status(status) == outcome);
}

TEST_CASE("Retry-After: seconds or HTTP-date", "[sendgrid]") {
  auto now = std::chrono::system_clock::from_time_t(1784746800);  // Wed, 22 Jul 2026 19:00:00 GMT
  CHECK(parse_retry_after("120", now) == std::chrono::milliseconds(120000));
  CHECK(parse_retry_after("Wed, 22 Jul 2026 19:00:30 GMT", now) == std::chrono::milliseconds(30000));
  CHECK(parse_retry_after("Wed, 22 Jul 2026 18:00:00 GMT", now) == std::chrono::milliseconds(0));
  CHECK_FALSE(parse_retry_after("soon", now));
  CHECK_FALSE(parse_retry_after("", now));
}

TEST_CASE("SendGrid: a 502 or 504 may have been sent, other errors surely not", "[sendgrid]") {
  SendGridProvider api("https://api.sendgrid.com", "k");
  auto [status, ambiguous] = GENERATE(table<long, bool>({{502, true}, {504, true}, {500, false}, {503, false},
                                                         {400, false}, {429, false}}));
  CAPTURE(status);
  auto a = interpret_response(api, HttpResponse{status, {}, ""}, std::chrono::system_clock::now());
  CHECK(a.may_have_been_sent == ambiguous);  // README "Provider health and the retry budget": a gateway answered, the service may have it
}

TEST_CASE("SendGrid: a 429 without Retry-After is parked until X-RateLimit-Reset", "[sendgrid]") {
  SendGridProvider api("https://api.sendgrid.com", "k");
  auto now = std::chrono::system_clock::from_time_t(1392815200);
  // rate-limits page: "X-RateLimit-Reset: 1392815263" on the 429
  HttpResponse r{429, {{"x-ratelimit-limit", "150"}, {"x-ratelimit-remaining", "0"}, {"x-ratelimit-reset", "1392815263"}},
                 R"({"errors":[{"field":null,"message":"too many requests"}]})"};
  auto a = interpret_response(api, r, now);
  CHECK(a.outcome == AttemptOutcome::kError);
  CHECK(a.retry_after == std::chrono::milliseconds(63000));
  r.headers.emplace_back("retry-after", "2");
  CHECK(interpret_response(api, r, now).retry_after == std::chrono::milliseconds(2000));
}

TEST_CASE("SendGrid: names with a comma or semicolon are sent in a form SendGrid keeps", "[sendgrid]") {
  json j = fakes::sample_request();
  j["from"] = "Équipe Facturation <billing@example.com>";
  j["to"] = {"\"Doe, Jane\" <jane@example.org>", json{{"email", "joe@example.org"}, {"name", "Joe; Sr."}},
             json{{"email", "al@example.org"}, {"name", "Al \"Big, Al\" Smith"}}, "Plain Name <p@example.org>"};
  SendGridProvider api("https://api.sendgrid.com", "k");
  json body = json::parse(api.build_request(parse_email(j.dump()).value(), "r").body);
  const json& to = body["personalizations"][0]["to"];
  // limitations page: to.name "cannot include either the ; or , characters"; quoted as the SDK does.
  CHECK(to[0] == json{{"email", "jane@example.org"}, {"name", "\"Doe, Jane\""}});
  CHECK(to[1] == json{{"email", "joe@example.org"}, {"name", "\"Joe; Sr.\""}});
  // With a quote inside, RFC 2047: no ',' ';' or '"' left for SendGrid to split on.
  std::string encoded = to[2]["name"];
  CHECK(encoded.find_first_of(",;\"") == std::string::npos);
  CHECK(encoded == "=?UTF-8?B?" + base64_encode("Al \"Big, Al\" Smith") + "?=");
  CHECK(to[3] == json{{"email", "p@example.org"}, {"name", "Plain Name"}});
  // "Unicode encoding is not supported for the from field": the sender name goes 7-bit.
  CHECK(body["from"]["name"] == "=?UTF-8?B?" + base64_encode("Équipe Facturation") + "?=");
}

TEST_CASE("SendGrid: non-ASCII header values are RFC 2047 encoded, ASCII ones untouched", "[sendgrid]") {
  json j = fakes::sample_request();
  j["headers"] = {{"X-Note", "Grüße"}, {"X-Plain", "as is"}};
  SendGridProvider api("https://api.sendgrid.com", "k");
  json body = json::parse(api.build_request(parse_email(j.dump()).value(), "r").body);
  CHECK(body["headers"]["X-Note"] == "=?UTF-8?B?" + base64_encode("Grüße") + "?=");
  CHECK(body["headers"]["X-Plain"] == "as is");
}

TEST_CASE("SendGrid: inline images keep their content id, sandbox is sandbox_mode", "[sendgrid]") {
  json j = fakes::sample_request();
  j["attachments"] = {{{"filename", "logo.png"}, {"content_type", "image/png"}, {"content", "iVBORw=="},
                       {"disposition", "inline"}, {"content_id", "logo"}}};
  j["sandbox"] = true;
  SendGridProvider api("https://api.sendgrid.com", "k");
  json body = json::parse(api.build_request(parse_email(j.dump()).value(), "r").body);
  CHECK(body["attachments"] == json::parse(R"([{"content": "iVBORw==", "filename": "logo.png", "type": "image/png",
                                                 "disposition": "inline", "content_id": "logo"}])"));
  CHECK(body["mail_settings"] == json::parse(R"({"sandbox_mode": {"enable": true}})"));
}
