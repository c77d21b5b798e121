// MailgunProvider: the Mailgun Messages API wire format (POST {base}/v3/{domain}/messages, form).
// Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "http_provider.h"

namespace mailrelay {

class MailgunProvider final : public ProviderApi {
 public:
  MailgunProvider(std::string base_url, std::string domain, std::string api_key);
  HttpRequest build_request(const Email& email) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;

 private:
  std::string url_;
  std::string authorization_;
};

}  // namespace mailrelay
