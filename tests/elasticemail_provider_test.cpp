#include <catch2/catch.hpp>

#include "elasticemail_provider.h"
#include "email.h"
#include "http_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

TEST_CASE("Elastic Email request matches the golden v4 transactional payload", "[elasticemail]") {
  json j = fakes::full_request();
  ElasticEmailProvider api("https://api.elasticemail.com/", "ee-fake-key");
  HttpRequest r = api.build_request(parse_email(j.dump()).value(), "req-1");
  CHECK(r.url == "https://api.elasticemail.com/v4/emails/transactional");
  CHECK(r.content_type == "application/json");
  CHECK(r.headers == std::vector<std::pair<std::string, std::string>>{
                         {"Accept", "application/json"}, {"X-ElasticEmail-ApiKey", "ee-fake-key"}});
  json golden = json::parse(R"({
    "Recipients": {"To": ["alice@example.org", "\"Doe, Bob\" <bob@example.org>"], "CC": ["carol@example.org"],
                   "BCC": ["dave@example.org"]},
    "Content": {
      "Body": [{"ContentType": "PlainText", "Content": "plain body", "Charset": "utf-8"},
               {"ContentType": "HTML", "Content": "<p>html body</p>", "Charset": "utf-8"}],
      "From": "Billing <billing@example.com>",
      "ReplyTo": "support@example.com",
      "Subject": "Your invoice",
      "Headers": {"X-Campaign": "nov", "X-Mailrelay-Metadata-invoice_id": "42"},
      "Attachments": [{"BinaryContent": "JVBERi0x", "Name": "a.pdf", "ContentType": "application/pdf"}],
      "Postback": "req-1"
    },
    "Options": {"ChannelName": "invoice"}
  })");
  CHECK(json::parse(r.body) == golden);
}

TEST_CASE("Elastic Email answers and limits", "[elasticemail]") {
  ElasticEmailProvider api("https://api.elasticemail.com", "k");
  auto now = std::chrono::system_clock::now();
  SECTION("200 EmailSend: MessageID is the id") {
    auto a = interpret_response(api, HttpResponse{200, {}, R"({"TransactionID":"tx-1","MessageID":"m-1"})"}, now);
    CHECK(a.outcome == AttemptOutcome::kSent);
    CHECK(a.message_id == "m-1");
  }
  SECTION("errors by status: 401 error, 400 rejected, 429 error with Retry-After") {
    CHECK(interpret_response(api, HttpResponse{401, {}, R"({"Error":"Access denied."})"}, now).outcome == AttemptOutcome::kError);
    auto rejected = interpret_response(api, HttpResponse{400, {}, R"({"Error":"Invalid recipient."})"}, now);
    CHECK(rejected.outcome == AttemptOutcome::kRejected);
    CHECK(rejected.error == "Invalid recipient.");
    CHECK(interpret_response(api, HttpResponse{429, {{"retry-after", "3"}}, ""}, now).retry_after ==
          std::chrono::milliseconds(3000));
  }
  SECTION("a 429 without Retry-After still parks it (one second)") {
    auto a = interpret_response(api, HttpResponse{429, {}, R"({"Error":"Too many requests"})"}, now);
    CHECK(a.outcome == AttemptOutcome::kError);
    CHECK(a.throttled);
    CHECK(a.retry_after == kUnnamedThrottlePark);
  }
  SECTION("key and account failures in a 400 are errors, not refusals") {
    for (const char* text : {"APIKey Expired", "Access Denied", "Your account is not allowed to send"}) {
      CAPTURE(text);
      auto a = interpret_response(api, HttpResponse{400, {}, json{{"Error", text}}.dump()}, now);
      CHECK(a.outcome == AttemptOutcome::kError);
      CHECK_FALSE(a.throttled);
    }
  }
  SECTION("no test mode, one tag, no inline images") {
    CHECK_FALSE(api.supports_sandbox());
    MessageLimits limits = MessageLimits::relay().tighten(api.limits());
    json j = fakes::sample_request();
    j["tags"] = {"a", "b"};
    CHECK(parse_email(j.dump(), limits).error().field == "tags");
    j["tags"] = {"a"};
    j["attachments"] = {{{"filename", "logo.png"}, {"content", "iVBORw=="}, {"disposition", "inline"}, {"content_id", "logo"}}};
    auto r = parse_email(j.dump(), limits);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == "attachments[0].disposition");
  }
}
