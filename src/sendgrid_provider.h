// SendGridProvider: the SendGrid v3 Mail Send wire format (POST {base}/v3/mail/send).
// Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "http_provider.h"

namespace mailrelay {

class SendGridProvider final : public ProviderApi {
 public:
  SendGridProvider(std::string base_url, std::string api_key);
  HttpRequest build_request(const Email& email) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;

 private:
  std::string url_;
  std::string authorization_;
};

}  // namespace mailrelay
