#include <catch2/catch.hpp>

#include "base64.h"
#include "email.h"
#include "http_provider.h"
#include "postmark_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

TEST_CASE("Postmark request matches the golden email-api payload", "[postmark]") {
  json j = fakes::full_request();
  j["attachments"].push_back({{"filename", "logo.png"}, {"content_type", "image/png"}, {"content", "iVBORw=="},
                              {"disposition", "inline"}, {"content_id", "logo"}});
  PostmarkProvider api("https://api.postmarkapp.com/", "pm-fake-token", "outbound");
  HttpRequest r = api.build_request(parse_email(j.dump()).value(), "req-1");
  CHECK(r.url == "https://api.postmarkapp.com/email");
  CHECK(r.content_type == "application/json");
  CHECK(r.headers == std::vector<std::pair<std::string, std::string>>{
                         {"Accept", "application/json"}, {"X-Postmark-Server-Token", "pm-fake-token"}});
  json golden = json::parse(R"({
    "From": "Billing <billing@example.com>",
    "To": "alice@example.org, \"Doe, Bob\" <bob@example.org>",
    "Cc": "carol@example.org",
    "Bcc": "dave@example.org",
    "Subject": "Your invoice",
    "Tag": "invoice",
    "HtmlBody": "<p>html body</p>",
    "TextBody": "plain body",
    "ReplyTo": "support@example.com",
    "Headers": [{"Name": "X-Campaign", "Value": "nov"}],
    "Metadata": {"invoice_id": "42", "mailrelay_request_id": "req-1"},
    "Attachments": [{"Name": "a.pdf", "Content": "JVBERi0x", "ContentType": "application/pdf"},
                    {"Name": "logo.png", "Content": "iVBORw==", "ContentType": "image/png", "ContentID": "cid:logo"}],
    "MessageStream": "outbound"
  })");
  CHECK(json::parse(r.body) == golden);
}

TEST_CASE("Postmark: a sandbox message goes with the test token, nothing delivered", "[postmark]") {
  json j = fakes::sample_request();
  j["sandbox"] = true;
  PostmarkProvider api("https://api.postmarkapp.com", "pm-fake-token", "outbound");
  HttpRequest r = api.build_request(parse_email(j.dump()).value(), "req-2");
  CHECK(r.headers[1] == std::pair<std::string, std::string>{"X-Postmark-Server-Token", "POSTMARK_API_TEST"});
}

// https://postmarkapp.com/developer/api/overview#error-codes: a message problem is `rejected`,
// a token, sender signature or account problem is `error` (README "Providers" and "Provider health and the retry budget").
TEST_CASE("Postmark answers: ErrorCode decides between rejected and error", "[postmark]") {
  PostmarkProvider api("https://api.postmarkapp.com", "t", "outbound");
  auto now = std::chrono::system_clock::now();
  SECTION("200 with ErrorCode 0 is sent, MessageID is the id") {
    HttpResponse r{200, {}, R"({"To":"a@example.org","SubmittedAt":"2026-11-23T12:00:00Z","MessageID":"b7bc2f4a-e38e-4336-af7d-e6c392c2f817","ErrorCode":0,"Message":"OK"})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == AttemptOutcome::kSent);
    CHECK(a.message_id == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817");
  }
  auto [status, code, outcome] = GENERATE(table<long, int, AttemptOutcome>({
      {422, 300, AttemptOutcome::kRejected},  // Invalid email request
      {422, 406, AttemptOutcome::kRejected},  // Inactive recipient
      {422, 411, AttemptOutcome::kRejected},  // Forbidden attachment type
      {422, 400, AttemptOutcome::kError},     // Sender signature not found
      {422, 401, AttemptOutcome::kError},     // Sender signature not confirmed
      {422, 405, AttemptOutcome::kError},     // Not allowed to send
      {422, 412, AttemptOutcome::kError},     // Account is pending
      {422, 413, AttemptOutcome::kError},     // Account may not send
      {401, 10, AttemptOutcome::kError},      // Bad or missing API token
      {500, 0, AttemptOutcome::kError},
      {200, 300, AttemptOutcome::kError}}));  // a 200 that is not ErrorCode 0 did not send
  CAPTURE(status, code);
  HttpResponse r{status, {}, json{{"ErrorCode", code}, {"Message", "details"}}.dump()};
  auto a = interpret_response(api, r, now);
  CHECK(a.outcome == outcome);
  CHECK(a.error == "details (ErrorCode " + std::to_string(code) + ")");
}

TEST_CASE("Postmark: a rate limit parks it, by HTTP 429 or ErrorCode 429", "[postmark]") {
  PostmarkProvider api("https://api.postmarkapp.com", "t", "outbound");
  auto now = std::chrono::system_clock::now();
  auto by_code = interpret_response(api, HttpResponse{422, {}, R"({"ErrorCode":429,"Message":"Rate limit exceeded"})"}, now);
  CHECK(by_code.throttled);
  CHECK(by_code.outcome == AttemptOutcome::kError);
  CHECK(by_code.retry_after == std::chrono::milliseconds(1000));
  auto by_status = interpret_response(api, HttpResponse{429, {{"retry-after", "4"}}, ""}, now);
  CHECK(by_status.throttled);
  CHECK(by_status.retry_after == std::chrono::milliseconds(4000));
  CHECK_FALSE(interpret_response(api, HttpResponse{422, {}, R"({"ErrorCode":300,"Message":"x"})"}, now).throttled);
}

TEST_CASE("Postmark limits: 50 recipients, one tag of up to 1000 characters", "[postmark][limits]") {
  MessageLimits limits = MessageLimits::relay().tighten(PostmarkProvider("https://pm", "t", "outbound").limits());
  json j = fakes::sample_request();
  json to = json::array();
  for (int i = 0; i < 51; ++i) to.push_back("r" + std::to_string(i) + "@example.org");
  j["to"] = to;
  auto r = parse_email(j.dump(), limits);
  REQUIRE_FALSE(r);
  CHECK(r.error().field == "to");
  j["to"].erase(50);
  CHECK(parse_email(j.dump(), limits));
  j["tags"] = {"a", "b"};
  r = parse_email(j.dump(), limits);
  REQUIRE_FALSE(r);
  CHECK(r.error().field == "tags");
}
