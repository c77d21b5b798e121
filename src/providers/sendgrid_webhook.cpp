// SendGrid's Signed Event Webhook: verification and the event batch (the send side is in
// sendgrid_provider.cpp).
#include "sendgrid_provider.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

#include "base64.h"
#include "message_limits.h"  // kRequestIdKey
#include "provider_registry.h"
#include "hash.h"

namespace mailrelay {
namespace {

using json = nlohmann::json;
using namespace webhook_json;

constexpr const char* kSignatureHeader = "X-Twilio-Email-Event-Webhook-Signature";
constexpr const char* kTimestampHeader = "X-Twilio-Email-Event-Webhook-Timestamp";

struct FreeKey {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Key = std::unique_ptr<EVP_PKEY, FreeKey>;

// The key as SendGrid shows it: base64 of a DER SubjectPublicKeyInfo (no PEM armour), P-256.
Key sendgrid_key(std::string_view public_key_base64, std::string* why = nullptr) {
  auto der = base64_decode(public_key_base64);
  if (!der) {
    if (why) *why = "is not base64";
    return nullptr;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(der->data());
  Key key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der->size())));
  if (!key) {
    if (why) *why = "is not a DER public key";
    return nullptr;
  }
  if (!EVP_PKEY_is_a(key.get(), "EC") || EVP_PKEY_get_bits(key.get()) != 256) {
    if (why) *why = "is not an ECDSA P-256 key";
    return nullptr;
  }
  return key;
}

}  // namespace

std::optional<std::string> check_sendgrid_public_key(std::string_view public_key_base64) {
  std::string why;
  if (!sendgrid_key(public_key_base64, &why)) return why;
  return std::nullopt;
}

// https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
// (and the official SDKs' EventWebhook.verifySignature): the payload signed is the
// X-Twilio-Email-Event-Webhook-Timestamp value followed by the raw body, ECDSA with SHA-256; the
// X-Twilio-Email-Event-Webhook-Signature header is the base64 of the DER signature.
bool verify_sendgrid_signature(std::string_view public_key_base64, std::string_view signature_base64,
                               std::string_view timestamp, std::string_view body) {
  Key key = sendgrid_key(public_key_base64);
  auto signature = base64_decode(signature_base64);
  if (!key || !signature || signature->empty()) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1) return false;
  if (EVP_DigestVerifyUpdate(ctx.get(), timestamp.data(), timestamp.size()) != 1 ||
      EVP_DigestVerifyUpdate(ctx.get(), body.data(), body.size()) != 1) {
    return false;
  }
  return EVP_DigestVerifyFinal(ctx.get(), reinterpret_cast<const unsigned char*>(signature->data()),
                               signature->size()) == 1;
}

// https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event: a JSON array; each
// event has "event", "email", "timestamp", "sg_event_id", "sg_message_id"; custom_args come back
// as top-level fields (mailrelay_request_id). A bounce's "type" is "bounce" (hard) or "blocked"
// (soft); a drop's "reason" says why ("Bounced Address", "Unsubscribed Address", "Spam Reporting
// Address" mean SendGrid already suppresses the address). "processed" and "group_resubscribe"
// are outside our vocabulary.
Result<WebhookBatch> parse_sendgrid_events(std::string_view body, std::int64_t timestamp) {
  json doc = json::parse(body, nullptr, false);
  if (!doc.is_array()) return Error{"invalid_request", "the body must be a JSON array of events", ""};
  WebhookBatch batch;
  batch.timestamp = timestamp;
  for (const auto& item : doc) {
    if (!item.is_object()) return Error{"invalid_request", "every event must be a JSON object", ""};
    const std::string kind = text(item, "event");
    DeliveryEvent e;
    e.provider = "sendgrid";
    e.recipient = text(item, "email");
    e.request_id = text(item, kRequestIdKey);
    e.client = text(item, kClientKey);
    e.provider_message_id = text(item, "sg_message_id");
    e.provider_event_id = text(item, "sg_event_id");
    // Without an id, the event itself (its canonical text: keys sorted) is what a replay repeats.
    e.replay_key = e.provider_event_id.empty() ? "digest:" + sha256_hex(item.dump()) : e.provider_event_id;
    e.occurred_at = utc_from_unix(seconds_of(item, "timestamp"));
    e.reason = text(item, "reason");
    if (e.reason.empty()) e.reason = text(item, "response");
    if (kind == "bounce") {
      e.type = "bounced";
      e.bounce_class = text(item, "type") == "blocked" ? "soft" : "hard";
      e.suppresses = e.bounce_class == "hard";
    } else if (kind == "dropped") {
      e.type = "dropped";
      e.suppresses = e.reason == "Bounced Address" || e.reason == "Unsubscribed Address" ||
                     e.reason == "Spam Reporting Address";
    } else if (!classify(e, kind, {{"delivered", "delivered", false}, {"deferred", "deferred", false},
                                   {"spamreport", "complained", true}, {"unsubscribe", "unsubscribed", true},
                                   {"group_unsubscribe", "unsubscribed", true}, {"open", "opened", false},
                                   {"click", "clicked", false}})) {
      ++batch.ignored;
      continue;
    }
    batch.events.push_back(std::move(e));
  }
  return batch;
}

ProviderWebhook sendgrid_webhook() {
  ProviderWebhook w;
  w.secret = {"webhook-public-key", "webhook public key", "SENDGRID_WEBHOOK_PUBLIC_KEY", "sendgrid_webhook_public_key", false};
  w.help = "SendGrid's Signed Event Webhook verification key, base64 as SendGrid shows it";
  w.headers = {kSignatureHeader, kTimestampHeader};
  w.check = [](const std::string& key) -> std::optional<std::string> {
    if (auto problem = check_sendgrid_public_key(key)) {
      return "the SendGrid webhook public key " + *problem + " (paste the key SendGrid shows, base64)";
    }
    return std::nullopt;
  };
  w.verify = [](const std::string& key, const WebhookRequest& request) -> Result<std::string> {
    const std::string& signature = request.header(kSignatureHeader);
    const std::string& timestamp = request.header(kTimestampHeader);
    if (signature.empty() || timestamp.empty() || !verify_sendgrid_signature(key, signature, timestamp, request.body)) {
      return Error{"invalid_signature", "missing or bad X-Twilio-Email-Event-Webhook-Signature", ""};
    }
    return timestamp;
  };
  w.parse = [](const WebhookRequest& request, std::int64_t signed_at) { return parse_sendgrid_events(request.body, signed_at); };
  return w;
}

}  // namespace mailrelay
