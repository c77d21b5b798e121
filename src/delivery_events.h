// Delivery events (README "Delivery events and suppressions"): what a provider's webhook says happened to a message after it
// took it, verified as the provider documents and put into one vocabulary. Pure functions on the
// request's bytes; no I/O. Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "result.h"

namespace mailrelay {

struct DeliveryEvent {
  std::string provider;
  // delivered, deferred, bounced, dropped, complained, unsubscribed, opened, clicked
  std::string type;
  std::string bounce_class;         // hard or soft, for bounced; else ""
  std::string request_id;           // from the relay's stamp; "" when the message had none
  std::string provider_message_id;
  std::string provider_event_id;    // the provider's id of the event; "" when it gives none
  std::string replay_key;           // what replays are recognised by (never written); "" for none
  std::string recipient;            // the address: hashed for the log and the store, never written
  std::string reason;               // provider text, as sent (redacted where it is written)
  std::string occurred_at;          // UTC, 2026-12-03T06:00:00.000Z; "" when not given
  // The address is suppressed for every provider: a hard bounce, a complaint, an unsubscribe, or
  // a drop because the provider already has it as bounced, unsubscribed or complained.
  bool suppresses = false;

  // The normalised event, as the audit line and the app (--events-forward-url) get it: the
  // recipient as domain and keyed hash ("" without a key), reason with addresses redacted.
  nlohmann::ordered_json to_json(const std::string& recipient_hash) const;
};

// What a webhook request held, once parsed.
struct WebhookBatch {
  std::int64_t timestamp = 0;           // the signed timestamp (unix seconds)
  std::vector<DeliveryEvent> events;    // in our vocabulary
  std::size_t ignored = 0;              // events outside it (processed, accepted, ...)
};

// SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over the timestamp header's value
// followed by the raw body; the signature header is base64 (DER); the key is base64 DER
// (SubjectPublicKeyInfo), as SendGrid shows it.
bool verify_sendgrid_signature(std::string_view public_key_base64, std::string_view signature_base64,
                               std::string_view timestamp, std::string_view body);
// Why a --sendgrid-webhook-public-key-file value cannot be used, or nullopt when it can.
std::optional<std::string> check_sendgrid_public_key(std::string_view public_key_base64);

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

// Postmark's webhooks are protected by HTTP basic auth (the credentials are in the webhook URL
// set at Postmark): `authorization` must be "Basic base64(credentials)", compared in constant time.
bool verify_basic_auth(std::string_view credentials, std::string_view authorization);

// Webhook bodies nest no deeper than this (the providers' payloads nest 4 deep at most); deeper
// bodies are refused before they are parsed.
inline constexpr int kMaxWebhookDepth = 16;

// SendGrid's body: a JSON array of events. Fails (invalid_request) when it is not one. An event
// without sg_event_id is recognised as a replay by a digest of the whole event.
Result<WebhookBatch> parse_sendgrid_events(std::string_view body, std::int64_t timestamp);
// Mailgun's body: {"signature": {...}, "event-data": {...}} (already verified).
Result<WebhookBatch> parse_mailgun_event(const nlohmann::json& body);
// Postmark's body: one JSON object with a RecordType.
Result<WebhookBatch> parse_postmark_event(std::string_view body);

// Unix seconds (fractions kept to the millisecond) as UTC text: 2026-12-03T06:00:00.000Z.
std::string utc_from_unix(double seconds);

}  // namespace mailrelay
