// AWS Signature Version 4 for one HTTP request, with OpenSSL (no AWS SDK in Debian bookworm).
// https://docs.aws.amazon.com/general/latest/gr/sigv4_signing.html; checked against AWS's
// signature test suite (tests/sigv4_test.cpp). Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailrelay {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // temporary credentials only; signed as X-Amz-Security-Token
};

struct SigV4Request {
  std::string method;  // "POST"
  std::string host;    // the Host header as sent: host, or host:port for a non-default port
  std::string path;    // already URI-encoded, e.g. "/v2/email/outbound-emails"
  std::vector<std::pair<std::string, std::string>> headers;  // signed besides host and x-amz-date
  std::string body;
};

// The headers to add to the request: X-Amz-Date, X-Amz-Security-Token (when the credentials have
// one; it is signed) and Authorization.
std::vector<std::pair<std::string, std::string>> sigv4_sign(const SigV4Request& request, const std::string& region,
                                                            const std::string& service, const AwsCredentials& credentials,
                                                            std::chrono::system_clock::time_point when);

}  // namespace mailrelay
