#include "delivery_events.h"

#include <openssl/crypto.h>

#include <chrono>

#include "ascii.h"
#include "base64.h"
#include "text_helpers.h"  // redact_addresses, utc_text

namespace mailrelay {

using json = nlohmann::json;

const std::string& WebhookRequest::header(const std::string& name) const {
  static const std::string kNone;
  auto it = headers.find(name);
  return it == headers.end() ? kNone : it->second;
}

namespace webhook_json {

const json& member(const json& doc, const char* name) {
  static const json kNull;
  if (!doc.is_object()) return kNull;
  auto it = doc.find(name);
  return it == doc.end() ? kNull : *it;
}

std::string text(const json& doc, const char* name) {
  auto it = doc.find(name);
  if (it == doc.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return "";
}

double seconds_of(const json& doc, const char* name) {
  auto it = doc.find(name);
  if (it == doc.end()) return 0;
  if (it->is_number()) return it->get<double>();
  if (it->is_string()) {
    try {
      return std::stod(it->get<std::string>());
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

bool classify(DeliveryEvent& e, const std::string& kind, std::initializer_list<Kind> table) {
  for (const Kind& k : table) {
    if (kind == k.name) {
      e.type = k.type;
      e.suppresses = k.suppresses;
      return true;
    }
  }
  return false;
}

}  // namespace webhook_json

std::string utc_from_unix(double seconds) {
  // Not given, or past 2255: system_clock counts int64 nanoseconds, which end in 2262 (a larger
  // value overflowed in the conversion; found by tests/fuzz/webhook_fuzzer).
  if (!(seconds > 0) || seconds > 9000000000.0) return "";
  return utc_text(std::chrono::system_clock::time_point(
      std::chrono::round<std::chrono::milliseconds>(std::chrono::duration<double>(seconds))));
}

nlohmann::ordered_json DeliveryEvent::to_json(const std::string& recipient_hash) const {
  auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s); };
  const std::string domain = ascii_lower(recipient.substr(recipient.rfind('@') + 1));
  nlohmann::ordered_json out{{"provider", provider},
                             {"type", type},
                             {"bounce_class", or_null(bounce_class)},
                             {"request_id", or_null(request_id)},
                             {"client", or_null(client)},
                             {"provider_message_id", or_null(provider_message_id)},
                             {"provider_event_id", or_null(provider_event_id)},
                             {"recipient_domain", or_null(recipient.find('@') == std::string::npos ? "" : domain)},
                             {"recipient_hash", or_null(recipient_hash)},
                             {"reason", or_null(redact_addresses(reason))},
                             {"occurred_at", or_null(occurred_at)}};
  return out;
}

bool verify_basic_auth(std::string_view credentials, std::string_view authorization) {
  constexpr std::string_view kBasic = "Basic ";
  if (credentials.empty() || authorization.size() <= kBasic.size() ||
      !iequals(authorization.substr(0, kBasic.size()), kBasic)) {
    return false;
  }
  auto given = base64_decode(authorization.substr(kBasic.size()));
  return given && given->size() == credentials.size() &&
         CRYPTO_memcmp(given->data(), credentials.data(), credentials.size()) == 0;
}

}  // namespace mailrelay
