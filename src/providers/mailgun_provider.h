// MailgunProvider: the Mailgun Messages API wire format (POST {base}/v3/{domain}/messages, form).
// Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "delivery_events.h"
#include "http_provider.h"

namespace mailrelay {

class MailgunProvider final : public ProviderApi {
 public:
  MailgunProvider(std::string base_url, std::string domain, std::string api_key);
  HttpRequest build_request(const Email& email, std::string_view request_id) const override;
  std::string message_id(const HttpResponse& response) const override;
  std::string error_message(const HttpResponse& response) const override;
  AttemptOutcome classify(const HttpResponse& response) const override;
  std::optional<std::chrono::milliseconds> throttled_for(const HttpResponse& response,
                                                         std::chrono::system_clock::time_point now) const override;
  MessageLimits limits() const override;
  bool supports_sandbox() const override { return true; }

 private:
  std::string url_;
  std::string authorization_;
};

struct ProviderWebhook;
// The webhook (mailgun_webhook.cpp) -------------------------------------------------------------
// Mailgun's body carries its signature: {"signature": {"timestamp", "token", "signature"}}. The
// signature covers only timestamp and token, not the body: these three strings are all that is
// read of an unverified body (a streaming scan that builds nothing else).
struct MailgunSignature {
  std::string timestamp, token, signature;  // "" where missing (or the body is not JSON)
};
MailgunSignature mailgun_signature(std::string_view body);
// Mailgun: hex HMAC-SHA256(signing key, timestamp + token), compared in constant time.
bool verify_mailgun_signature(std::string_view signing_key, std::string_view timestamp, std::string_view token,
                              std::string_view signature_hex);
// Mailgun's body: {"signature": {...}, "event-data": {...}} (already verified).
Result<WebhookBatch> parse_mailgun_event(const nlohmann::json& body);
ProviderWebhook mailgun_webhook();

}  // namespace mailrelay
