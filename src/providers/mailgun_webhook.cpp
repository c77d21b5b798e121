// Mailgun's HTTP webhooks: the signature in the body and the event (the send side is in
// mailgun_provider.cpp).
#include "mailgun_provider.h"

#include <openssl/crypto.h>

#include "ascii.h"
#include "message_limits.h"  // kRequestIdKey
#include "provider_registry.h"
#include "hash.h"

namespace mailrelay {

using json = nlohmann::json;
using namespace webhook_json;

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
  e.client = text(member(data, "user-variables"), kClientKey);
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

ProviderWebhook mailgun_webhook() {
  ProviderWebhook w;
  w.secret = {"webhook-signing-key", "webhook signing key", "MAILGUN_WEBHOOK_SIGNING_KEY", "mailgun_webhook_signing_key", false};
  w.help = "Mailgun's HTTP webhook signing key";
  w.verify = [](const std::string& key, const WebhookRequest& request) -> Result<std::string> {
    // Mailgun signs timestamp + token, not the body: only those are read before verification.
    const MailgunSignature signature = mailgun_signature(request.body);
    if (signature.timestamp.empty() || signature.token.empty() ||
        !verify_mailgun_signature(key, signature.timestamp, signature.token, signature.signature)) {
      return Error{"invalid_signature", "missing or bad signature (signature.timestamp, token, signature)", ""};
    }
    return signature.timestamp;
  };
  w.parse = [](const WebhookRequest& request, std::int64_t) {
    return parse_mailgun_event(json::parse(request.body, nullptr, false));
  };
  return w;
}

}  // namespace mailrelay
