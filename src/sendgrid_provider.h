// SendGridProvider: the SendGrid v3 Mail Send wire format (POST {base}/v3/mail/send).
// Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "http_provider.h"

namespace mailrelay {

class SendGridProvider final : public ProviderApi {
 public:
  SendGridProvider(std::string base_url, std::string api_key);
  HttpRequest build_request(const Email& email, std::string_view request_id) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;
  std::optional<std::chrono::milliseconds> throttled_for(const HttpResponse& response,
                                                         std::chrono::system_clock::time_point now) const override;
  MessageLimits limits() const override;
  bool supports_sandbox() const override { return true; }

 private:
  std::string url_;
  std::string authorization_;
};

}  // namespace mailrelay
