// SendGridProvider: the SendGrid v3 Mail Send wire format (POST {base}/v3/mail/send).
// Pure and immutable after construction; thread-safe.
#pragma once

#include <string>

#include "delivery_events.h"
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

struct ProviderWebhook;
// The webhook (sendgrid_webhook.cpp) ------------------------------------------------------------
// SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over the timestamp header's value
// followed by the raw body; the signature header is base64 (DER); the key is base64 DER
// (SubjectPublicKeyInfo), as SendGrid shows it.
bool verify_sendgrid_signature(std::string_view public_key_base64, std::string_view signature_base64,
                               std::string_view timestamp, std::string_view body);
// Why a --sendgrid-webhook-public-key-file value cannot be used, or nullopt when it can.
std::optional<std::string> check_sendgrid_public_key(std::string_view public_key_base64);
// SendGrid's body: a JSON array of events. Fails (invalid_request) when it is not one. An event
// without sg_event_id is recognised as a replay by a digest of the whole event.
Result<WebhookBatch> parse_sendgrid_events(std::string_view body, std::int64_t timestamp);
ProviderWebhook sendgrid_webhook();

}  // namespace mailrelay
