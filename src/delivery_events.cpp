#include "delivery_events.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <initializer_list>
#include <memory>

#include "ascii.h"
#include "base64.h"
#include "message_limits.h"  // kRequestIdKey
#include "sigv4.h"           // hmac_sha256_hex, sha256_hex
#include "text_helpers.h"    // redact_addresses, utc_text

namespace mailrelay {
namespace {

using json = nlohmann::json;

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

// doc[name], or null when doc is not an object or has no such member.
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

// A provider's event names that map one to one onto ours.
struct Kind {
  const char* name;
  const char* type;
  bool suppresses;
};

// Sets e's type from `table`; false when `kind` is outside our vocabulary.
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

}  // namespace

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
                             {"provider_message_id", or_null(provider_message_id)},
                             {"provider_event_id", or_null(provider_event_id)},
                             {"recipient_domain", or_null(recipient.find('@') == std::string::npos ? "" : domain)},
                             {"recipient_hash", or_null(recipient_hash)},
                             {"reason", or_null(redact_addresses(reason))},
                             {"occurred_at", or_null(occurred_at)}};
  return out;
}

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

// https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks: concatenate
// timestamp and token, HMAC-SHA256 with the Webhook Signing Key, compare the hex digest.
bool verify_mailgun_signature(std::string_view signing_key, std::string_view timestamp, std::string_view token,
                              std::string_view signature_hex) {
  std::string message(timestamp);
  message.append(token);
  const std::string expected = hmac_sha256_hex(signing_key, message);
  const std::string given = ascii_lower(signature_hex);
  return given.size() == expected.size() && CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0;
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

// https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads: one event
// per request, {"signature": {timestamp, token, signature}, "event-data": {event, timestamp,
// recipient, severity, reason, delivery-status, message.headers.message-id, user-variables}}.
// "failed" with severity "temporary" is retried by Mailgun (deferred); "permanent" is a hard
// bounce (also when Mailgun refused it for an address on its own suppression lists). The replay
// id is signature.token: event-data.id is only unique within a day (as django-anymail notes).
Result<WebhookBatch> parse_mailgun_event(const json& body) {
  const json& data = member(body, "event-data");
  if (!data.is_object()) return Error{"invalid_request", "event-data must be a JSON object", "event-data"};
  WebhookBatch batch;
  batch.timestamp = static_cast<std::int64_t>(seconds_of(member(body, "signature"), "timestamp"));
  const std::string kind = text(data, "event");
  DeliveryEvent e;
  e.provider = "mailgun";
  e.recipient = text(data, "recipient");
  e.request_id = text(member(data, "user-variables"), kRequestIdKey);
  e.provider_message_id = text(member(member(data, "message"), "headers"), "message-id");
  e.provider_event_id = text(member(body, "signature"), "token");
  e.replay_key = e.provider_event_id;
  e.occurred_at = utc_from_unix(seconds_of(data, "timestamp"));
  e.reason = text(member(data, "delivery-status"), "description");
  if (e.reason.empty()) e.reason = text(member(data, "delivery-status"), "message");
  if (e.reason.empty()) e.reason = text(data, "reason");
  if (kind == "failed") {
    const bool permanent = text(data, "severity") == "permanent";
    e.type = permanent ? "bounced" : "deferred";
    if (permanent) e.bounce_class = "hard";
    e.suppresses = permanent;
  } else if (!classify(e, kind, {{"delivered", "delivered", false}, {"rejected", "dropped", false},
                                 {"complained", "complained", true}, {"unsubscribed", "unsubscribed", true},
                                 {"opened", "opened", false}, {"clicked", "clicked", false}})) {
    ++batch.ignored;
    return batch;
  }
  batch.events.push_back(std::move(e));
  return batch;
}

namespace {

// Keeps the string (or integer) members of the top-level "signature" object; ignores the rest.
class SignatureScan final : public nlohmann::json_sax<json> {
 public:
  explicit SignatureScan(MailgunSignature& out) : out_(out) {}
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t v) override { return value(std::to_string(v)); }
  bool number_unsigned(number_unsigned_t v) override { return value(std::to_string(v)); }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t& v) override { return value(v); }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(true); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (depth_ == 1 && k == "signature") {
      // A second "signature" would let the verified one and the one parsed later differ.
      if (signature_named_) return fail();
      signature_named_ = true;
      in_signature_ = true;
    }
    if (depth_ == 2 && inside_) key_ = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return fail(); }

 private:
  bool fail() {
    out_ = {};
    return false;
  }
  bool open(bool object) {
    if (++depth_ == 2) inside_ = in_signature_ && object;
    return depth_ <= kMaxWebhookDepth || fail();
  }
  bool close() {
    if (depth_ == 2) inside_ = in_signature_ = false;
    --depth_;
    return true;
  }
  bool value(const std::string& v) {
    if (depth_ == 2 && inside_) {
      if (key_ == "timestamp") out_.timestamp = v;
      if (key_ == "token") out_.token = v;
      if (key_ == "signature") out_.signature = v;
    }
    if (depth_ == 1) in_signature_ = false;
    return true;
  }

  MailgunSignature& out_;
  int depth_ = 0;
  bool signature_named_ = false;  // a top-level "signature" member was seen
  bool in_signature_ = false;     // the current top-level member is "signature"
  bool inside_ = false;           // directly inside its object
  std::string key_;
};

}  // namespace

MailgunSignature mailgun_signature(std::string_view body) {
  MailgunSignature out;
  SignatureScan scan(out);
  if (!json::sax_parse(body, &scan, json::input_format_t::json, true)) out = {};
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

// https://postmarkapp.com/developer/webhooks/webhooks-overview (and the official postmark.js
// models): one JSON object per request, "RecordType" Bounce, Delivery, SpamComplaint, Open,
// Click or SubscriptionChange; Metadata comes back as sent (mailrelay_request_id). Bounces carry
// "Type" (HardBounce, SoftBounce, Transient, DnsError, BadEmailAddress, ...) and "Email"; the
// others "Recipient". Only bounces and complaints have an "ID"; other events are recognised as
// replays by their record type, message, recipient and time together.
Result<WebhookBatch> parse_postmark_event(std::string_view body) {
  const json doc = json::parse(body, nullptr, false);
  if (!doc.is_object()) return Error{"invalid_request", "the body must be a JSON object", ""};
  WebhookBatch batch;
  const std::string kind = text(doc, "RecordType");
  DeliveryEvent e;
  e.provider = "postmark";
  e.recipient = text(doc, kind == "Bounce" || kind == "SpamComplaint" ? "Email" : "Recipient");
  e.request_id = text(member(doc, "Metadata"), kRequestIdKey);
  e.provider_message_id = text(doc, "MessageID");
  e.provider_event_id = text(doc, "ID");
  for (const char* at : {"BouncedAt", "DeliveredAt", "ReceivedAt", "ChangedAt"}) {
    if (e.occurred_at.empty()) e.occurred_at = text(doc, at);  // as Postmark writes it, with its offset
  }
  e.replay_key = e.provider_event_id.empty()
                     ? kind + "\n" + e.provider_message_id + "\n" + e.recipient + "\n" + e.occurred_at
                     : kind + "\n" + e.provider_event_id;
  e.reason = text(doc, "Details");
  if (e.reason.empty()) e.reason = text(doc, "Description");
  if (kind == "Bounce") {
    const std::string type = text(doc, "Type");
    if (!classify(e, type, {{"SpamComplaint", "complained", true}, {"Unsubscribe", "unsubscribed", true}})) {
      e.type = "bounced";
      e.bounce_class = type == "HardBounce" || type == "BadEmailAddress" ? "hard" : "soft";
      e.suppresses = e.bounce_class == "hard";
    }
  } else if (kind == "SubscriptionChange") {
    if (member(doc, "SuppressSending") != true) {
      ++batch.ignored;
      return batch;
    }
    e.type = "unsubscribed";
    e.suppresses = true;
  } else if (!classify(e, kind, {{"Delivery", "delivered", false}, {"SpamComplaint", "complained", true},
                                 {"Open", "opened", false}, {"Click", "clicked", false}})) {
    ++batch.ignored;
    return batch;
  }
  batch.events.push_back(std::move(e));
  return batch;
}

}  // namespace mailrelay
