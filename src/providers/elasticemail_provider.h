// ElasticEmailProvider: the Elastic Email API v4 wire format (POST {base}/v4/emails/transactional,
// JSON). Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "http_provider.h"

namespace mailrelay {

class ElasticEmailProvider final : public ProviderApi {
 public:
  ElasticEmailProvider(std::string base_url, std::string api_key);
  HttpRequest build_request(const Email& email, std::string_view request_id) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;
  AttemptOutcome classify(const HttpResponse& response) const override;
  MessageLimits limits() const override;
  bool supports_sandbox() const override { return false; }  // v4 documents no test mode

 private:
  std::string url_;
  std::string api_key_;
};

}  // namespace mailrelay
