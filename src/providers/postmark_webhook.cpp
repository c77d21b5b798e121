// Postmark's webhooks: basic auth and the record (the send side is in postmark_provider.cpp).
#include "postmark_provider.h"

#include "message_limits.h"  // kRequestIdKey
#include "provider_registry.h"

namespace mailrelay {

using json = nlohmann::json;
using namespace webhook_json;

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
  e.client = text(member(doc, "Metadata"), kClientKey);
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

ProviderWebhook postmark_webhook() {
  ProviderWebhook w;
  w.secret = {"webhook-credentials", "webhook credentials", "POSTMARK_WEBHOOK_CREDENTIALS", "postmark_webhook_credentials", false};
  w.help = "user:password that Postmark's webhook URLs carry as basic auth";
  w.headers = {"Authorization"};
  // Postmark signs nothing and sends no timestamp: basic auth over TLS is its whole protection.
  w.signed_timestamp = false;
  w.challenge = "Basic realm=\"mailrelay webhooks\"";
  w.check = [](const std::string& credentials) -> std::optional<std::string> {
    if (credentials.find(':') == std::string::npos || credentials.size() < 12) {
      return "the Postmark webhook credentials must be user:password, 12 characters or more";
    }
    return std::nullopt;
  };
  w.verify = [](const std::string& credentials, const WebhookRequest& request) -> Result<std::string> {
    if (!verify_basic_auth(credentials, request.header("Authorization"))) {
      return Error{"invalid_signature", "missing or wrong basic auth credentials", ""};
    }
    return std::string();
  };
  w.parse = [](const WebhookRequest& request, std::int64_t) { return parse_postmark_event(request.body); };
  return w;
}

}  // namespace mailrelay
