// SesProvider: Amazon SES API v2 SendEmail (POST {base}/v2/email/outbound-emails, JSON, signed
// with AWS Signature Version 4), the message as raw MIME. Immutable after construction;
// thread-safe (the clock is).
#pragma once

#include <string>

#include "clock.h"
#include "http_provider.h"
#include "sigv4.h"

namespace mailrelay {

class SesProvider final : public ProviderApi {
 public:
  // `base_url` empty: https://email.<region>.amazonaws.com.
  SesProvider(std::string base_url, std::string region, AwsCredentials credentials, Clock& clock);
  HttpRequest build_request(const Email& email, std::string_view request_id) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;
  AttemptOutcome classify(const HttpResponse& response) const override;
  bool throttled(const HttpResponse& response) const override;
  std::optional<std::chrono::milliseconds> throttled_for(const HttpResponse& response,
                                                         std::chrono::system_clock::time_point now) const override;
  MessageLimits limits() const override;
  bool supports_sandbox() const override { return false; }  // SES has no test mode

 private:
  std::string url_;
  std::string host_;  // as curl sends it in Host: the signature covers it
  std::string path_;
  std::string region_;
  AwsCredentials credentials_;
  Clock& clock_;
};

// The request id as an SES message tag value, which may hold only A-Z a-z 0-9 _ and -
// (API_MessageTag): '_' '.' ':' become _5F _2E _3A, so the original is recoverable.
std::string ses_tag_value(std::string_view request_id);

}  // namespace mailrelay
