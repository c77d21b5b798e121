// PostmarkProvider: the Postmark Email API wire format (POST {base}/email, JSON).
// Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "delivery_events.h"
#include "http_provider.h"

namespace mailrelay {

class PostmarkProvider final : public ProviderApi {
 public:
  PostmarkProvider(std::string base_url, std::string server_token, std::string message_stream);
  HttpRequest build_request(const Email& email, std::string_view request_id) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;
  AttemptOutcome classify(const HttpResponse& response) const override;
  bool throttled(const HttpResponse& response) const override;
  std::optional<std::chrono::milliseconds> throttled_for(const HttpResponse& response,
                                                         std::chrono::system_clock::time_point now) const override;
  MessageLimits limits() const override;
  bool supports_sandbox() const override { return true; }

 private:
  std::string url_;
  std::string server_token_;
  std::string message_stream_;
};

struct ProviderWebhook;
// The webhook (postmark_webhook.cpp) ------------------------------------------------------------
// Postmark's body: one JSON object with a RecordType.
Result<WebhookBatch> parse_postmark_event(std::string_view body);
ProviderWebhook postmark_webhook();

}  // namespace mailrelay
