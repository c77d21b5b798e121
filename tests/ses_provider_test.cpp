#include <catch2/catch.hpp>

#include "base64.h"
#include "email.h"
#include "fake_clock.h"
#include "http_provider.h"
#include "ses_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

namespace {
const AwsCredentials kFake{"AKIAFAKEFAKEFAKEFAKE", "fake-ses-secret-key-not-a-secret", ""};
}  // namespace

TEST_CASE("SES request: SendEmail v2 with the outbox's MIME as Content.Raw, signed with SigV4", "[ses]") {
  fakes::FakeClock clock;
  json j = fakes::sample_request();
  j["cc"] = {"carol@example.org"};
  j["bcc"] = {"dave@example.org"};
  j["html"] = "<p><img src=\"cid:logo\"></p>";
  j["attachments"] = {{{"filename", "logo.png"}, {"content_type", "image/png"}, {"content", "iVBORw0K"},
                       {"disposition", "inline"}, {"content_id", "logo"}}};
  SesProvider api("", "eu-west-1", kFake, clock);
  HttpRequest r = api.build_request(parse_email(j.dump()).value(), "req.1:a_b");
  CHECK(r.url == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails");
  CHECK(r.content_type == "application/json");
  json body = json::parse(r.body);
  CHECK(body["FromEmailAddress"] == "billing@example.com");
  CHECK(body["Destination"] == json::parse(R"({"ToAddresses": ["alice@example.org", "bob@example.org"],
                                              "CcAddresses": ["carol@example.org"], "BccAddresses": ["dave@example.org"]})"));
  // API_MessageTag: values only A-Z a-z 0-9 _ -; the id is escaped reversibly.
  CHECK(body["EmailTags"] == json::parse(R"([{"Name": "mailrelay_request_id", "Value": "req_2E1_3Aa_5Fb"}])"));
  std::string mime = base64_decode(body["Content"]["Raw"]["Data"].get<std::string>()).value();
  CHECK(mime.find("From: Billing <billing@example.com>\r\n") != std::string::npos);
  CHECK(mime.find("\r\nBcc:") == std::string::npos);         // the envelope carries it, the header must not
  CHECK(mime.find("Message-ID:") == std::string::npos);      // SES sets its own
  CHECK(mime.find("Content-ID: <logo>") != std::string::npos);  // inline images carry over
  // X-Amz-Date, then Authorization over content-type, host and x-amz-date.
  REQUIRE(r.headers.size() == 2);
  CHECK(r.headers[0].first == "X-Amz-Date");
  CHECK_THAT(r.headers[1].second,
             Catch::StartsWith("AWS4-HMAC-SHA256 Credential=AKIAFAKEFAKEFAKEFAKE/") &&
                 Catch::Contains("/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="));
  CHECK(r.headers[1] == sigv4_sign({"POST", "email.eu-west-1.amazonaws.com", "/v2/email/outbound-emails",
                                    {{"Content-Type", "application/json"}}, r.body},
                                   "eu-west-1", "ses", kFake, clock.wall_now())[1]);
}

TEST_CASE("SES tag values round-trip the request id alphabet", "[ses]") {
  CHECK(ses_tag_value("01J0ABCDEFGHJKMNPQRSTVWXYZ") == "01J0ABCDEFGHJKMNPQRSTVWXYZ");
  CHECK(ses_tag_value("order-4711.v2:x_y") == "order-4711_2Ev2_3Ax_5Fy");
}

// SendEmail "Errors": the message is `rejected`; the account, its sending or domain is `error`
// (README "Provider health and the retry budget"); throttling parks the provider (README "Provider health and the retry budget").
TEST_CASE("SES answers: the error type decides", "[ses]") {
  fakes::FakeClock clock;
  SesProvider api("https://email.eu-west-1.amazonaws.com", "eu-west-1", kFake, clock);
  auto now = std::chrono::system_clock::now();
  SECTION("200 with MessageId is sent") {
    auto a = interpret_response(api, HttpResponse{200, {}, R"({"MessageId":"0102018c-abcd"})"}, now);
    CHECK(a.outcome == AttemptOutcome::kSent);
    CHECK(a.message_id == "0102018c-abcd");
  }
  auto [status, type, outcome, throttled] = GENERATE(table<long, std::string, AttemptOutcome, bool>({
      {400, "MessageRejected", AttemptOutcome::kRejected, false},
      {400, "BadRequestException", AttemptOutcome::kRejected, false},
      {400, "AccountSuspendedException", AttemptOutcome::kError, false},
      {400, "SendingPausedException", AttemptOutcome::kError, false},
      {400, "MailFromDomainNotVerifiedException", AttemptOutcome::kError, false},
      {404, "NotFoundException", AttemptOutcome::kError, false},
      {429, "TooManyRequestsException", AttemptOutcome::kError, true},
      {400, "LimitExceededException", AttemptOutcome::kError, true},
      {400, "ThrottlingException", AttemptOutcome::kError, true}}));
  CAPTURE(type);
  SECTION("named in X-Amzn-ErrorType") {
    HttpResponse r{status, {{"x-amzn-errortype", type + ":http://internal.amazon.com/coral/com.amazon.coral.service/"}},
                   R"({"message":"details"})"};
    auto a = interpret_response(api, r, now);
    CHECK(a.outcome == outcome);
    CHECK(a.throttled == throttled);
    CHECK(a.error == type + ": details");
    if (throttled) CHECK(a.retry_after == std::chrono::milliseconds(1000));
  }
  SECTION("named in the body's __type") {
    HttpResponse r{status, {}, json{{"__type", "com.amazonaws.sesv2#" + type}, {"message", "details"}}.dump()};
    CHECK(interpret_response(api, r, now).outcome == outcome);
  }
}

TEST_CASE("SES: a spent daily quota parks SES for the 5-minute cap", "[ses]") {
  fakes::FakeClock clock;
  SesProvider api("", "eu-west-1", kFake, clock);
  HttpResponse r{400, {{"x-amzn-errortype", "ThrottlingException"}}, R"({"message":"Daily message quota exceeded."})"};
  auto a = interpret_response(api, r, std::chrono::system_clock::now());
  CHECK(a.throttled);
  CHECK(a.retry_after == std::chrono::minutes(5));
}

TEST_CASE("SES: a 503 without Retry-After keeps the usual backoff, it is no throttle", "[ses]") {
  fakes::FakeClock clock;
  SesProvider api("", "eu-west-1", kFake, clock);
  auto a = interpret_response(api, HttpResponse{503, {}, R"({"message":"Service Unavailable"})"}, std::chrono::system_clock::now());
  CHECK(a.outcome == AttemptOutcome::kError);
  CHECK_FALSE(a.throttled);
  CHECK_FALSE(a.retry_after);
}

TEST_CASE("SES limits: 50 recipients, no test mode", "[ses][limits]") {
  fakes::FakeClock clock;
  SesProvider api("", "us-east-1", kFake, clock);
  CHECK_FALSE(api.supports_sandbox());
  CHECK(api.limits().recipients->max == 50);
}
