// Delivery events (README "Delivery events and suppressions"): what a provider's webhook says happened to a message after it
// took it, verified as the provider documents and put into one vocabulary. Pure functions on the
// request's bytes; no I/O. Thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
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
  std::string client;               // the sending client, from the relay's stamp; "" for none
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

// A webhook request as a provider's receiver sees it (HTTP libraries stay above).
struct WebhookRequest {
  std::string provider;    // the path's last segment
  std::string request_id;
  std::map<std::string, std::string> headers;  // those the provider's webhook names, by its spelling; "" absent
  std::string body;
  // The header's value, "" when absent.
  const std::string& header(const std::string& name) const;
};

// Webhook bodies nest no deeper than this (the providers' payloads nest 4 deep at most); deeper
// bodies are refused before they are parsed.
inline constexpr int kMaxWebhookDepth = 16;

// HTTP basic auth (Postmark's webhooks): `authorization` must be "Basic base64(credentials)",
// compared in constant time.
bool verify_basic_auth(std::string_view credentials, std::string_view authorization);

// What the providers' event parsers share: lenient reads of a JSON payload.
namespace webhook_json {
// doc[name], or null when doc is not an object or has no such member.
const nlohmann::json& member(const nlohmann::json& doc, const char* name);
// A string or number member as text; "" otherwise.
std::string text(const nlohmann::json& doc, const char* name);
// A number (or numeric string) member; 0 otherwise.
double seconds_of(const nlohmann::json& doc, const char* name);
// A provider's event names that map one to one onto ours.
struct Kind {
  const char* name;
  const char* type;
  bool suppresses;
};
// Sets e's type from `table`; false when `kind` is outside our vocabulary.
bool classify(DeliveryEvent& e, const std::string& kind, std::initializer_list<Kind> table);
}  // namespace webhook_json

// Unix seconds (fractions kept to the millisecond) as UTC text: 2026-12-03T06:00:00.000Z.
std::string utc_from_unix(double seconds);

}  // namespace mailrelay
