#include "event_service.h"

#include <cstdlib>

#include "api_error.h"
#include "delivery_events.h"
#include "json_depth.h"
#include "provider_registry.h"
#include "hash.h"

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;

WebhookReport answer(int status, const std::string& outcome, json body) {
  WebhookReport r;
  r.status = status;
  r.outcome = outcome;
  r.body = std::move(body);
  return r;
}

WebhookReport refusal(int status, const std::string& id, const std::string& code, const std::string& message) {
  return answer(status, code, error_json(id, code, message));
}

// Unix seconds as the providers write them: digits only, at most 12.
std::optional<std::int64_t> unix_seconds(const std::string& text) {
  if (text.empty() || text.size() > 12) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::stoll(text);
}

}  // namespace

std::string forward_signature(const std::string& key, std::int64_t t, const std::string& body) {
  const std::string stamp = std::to_string(t);
  return "t=" + stamp + ",v1=" + hmac_sha256_hex(key, stamp + "." + body);
}

WebhookReport EventService::handle(const EventEndpoints& endpoints, const WebhookRequest& request) {
  const std::string& id = request.request_id;
  const std::string& provider = request.provider;
  const ProviderDescriptor* descriptor = find_provider(provider);
  auto secret = endpoints.webhook_secrets.find(provider);
  if (!descriptor || !descriptor->webhook || secret == endpoints.webhook_secrets.end()) {
    return refusal(404, id, "not_found", "no webhook endpoint for '" + provider + "' is configured");
  }
  InFlight batch{request, {}, {}, {}, 0};
  if (auto refused = verify(*descriptor->webhook, secret->second, batch)) return *refused;
  // Replays, then suppressions before anything else is told (a failure leaves nothing half done),
  // then the app takes the batch or the provider retries it (its retries are the queue).
  if (!claim_fresh(batch) || !suppress(batch)) {
    forget_claims(batch);
    WebhookReport r = refuse(batch, 503, "state_store_unavailable", "the state store is unreachable; retry later");
    r.headers.emplace_back("Retry-After", "60");
    return r;
  }
  if (const std::string problem = forward(endpoints, batch); !problem.empty()) {
    forget_claims(batch);
    log_.warn("events: forwarding {} {} event(s) failed ({}); answering 503 so that {} retries", batch.fresh.size(),
              provider, problem, provider);
    return refuse(batch, 503, "forward_failed", "the application did not take the events (" + problem + "); retry later");
  }
  const std::string received_at = utc_timestamp(clock_);
  for (const DeliveryEvent* event : batch.fresh) {
    audit_.delivery(*event, suppresses(*event));
    metrics_.delivery_event(provider, event->type);
    if (!event->request_id.empty()) {  // joined to its send's status (README "Message status")
      json joined = event->to_json(audit_.recipient_hash(event->recipient));
      joined.erase("request_id");
      joined.erase("client");
      joined["received_at"] = received_at;
      store_.record_message_event(event->client, event->request_id, joined.dump(-1, ' ', false, json::error_handler_t::replace));
    }
  }
  const std::string outcome = batch.fresh.empty() && batch.duplicates > 0 ? "duplicate" : "accepted";
  metrics_.webhook(provider, outcome);
  return answer(200, outcome,
                json{{"request_id", id},
                     {"accepted", batch.fresh.size()},
                     {"duplicates", batch.duplicates},
                     {"ignored", batch.parsed.ignored}});
}

WebhookReport EventService::refuse(const InFlight& batch, int status, const std::string& code, const std::string& message) {
  metrics_.webhook(batch.request.provider, code);
  return refusal(status, batch.request.request_id, code, message);
}

// Verify first: nothing from an unverified request is recorded, not even a replay id. Nothing
// deeper than any provider nests is parsed, signed or not (a body of a million '[').
std::optional<WebhookReport> EventService::verify(const ProviderWebhook& webhook, const std::string& secret,
                                                  InFlight& batch) {
  const WebhookRequest& request = batch.request;
  if (json_nesting_depth(request.body, kMaxWebhookDepth) > kMaxWebhookDepth) {
    return refuse(batch, 400, "invalid_request", "JSON nested deeper than " + std::to_string(kMaxWebhookDepth) + " levels");
  }
  const Result<std::string> timestamp = webhook.verify(secret, request);
  if (!timestamp) {
    WebhookReport r = refuse(batch, 401, "invalid_signature", timestamp.error().message);
    if (!webhook.challenge.empty()) r.headers.emplace_back("WWW-Authenticate", webhook.challenge);
    return r;
  }
  const auto signed_at = unix_seconds(timestamp.value());
  if (webhook.signed_timestamp && (!signed_at || std::llabs(unix_now() - *signed_at) > kMaxSkew.count())) {
    return refuse(batch, 401, "invalid_signature",
                  "the signed timestamp is more than " + std::to_string(kMaxSkew.count()) + " s from now (stale or replayed)");
  }
  Result<WebhookBatch> parsed = webhook.parse(request, signed_at.value_or(0));
  if (!parsed) return refuse(batch, 400, "invalid_request", parsed.error().message);
  batch.parsed = std::move(parsed).value();
  return std::nullopt;
}

// Replays: an event id seen within the window is answered 200 and ignored. False when the store
// cannot say.
bool EventService::claim_fresh(InFlight& batch) {
  for (const auto& event : batch.parsed.events) {
    if (!event.replay_key.empty()) {
      const std::string key = sha256_hex(batch.request.provider + "\n" + event.replay_key);
      auto first = store_.claim_event(key, kReplayWindow);
      if (!first) return false;
      if (!first.value()) {
        ++batch.duplicates;
        continue;
      }
      batch.claimed.push_back(key);
    }
    batch.fresh.push_back(&event);
  }
  return true;
}

void EventService::forget_claims(const InFlight& batch) {
  for (const auto& key : batch.claimed) store_.forget_event(key);
}

bool EventService::suppresses(const DeliveryEvent& event) {
  return event.suppresses && event.recipient.find('@') != std::string::npos;
}

bool EventService::suppress(const InFlight& batch) {
  for (const DeliveryEvent* event : batch.fresh) {
    if (!suppresses(*event)) continue;
    Suppression why{event->type, redact_addresses(event->reason), batch.request.provider, event->occurred_at};
    if (why.since.empty()) why.since = utc_timestamp(clock_);
    if (!suppressions_.add(event->recipient, why)) return false;
  }
  return true;
}

// Posts the fresh events to --events-forward-url: "" when the app took them (or there is no
// app), else what went wrong.
std::string EventService::forward(const EventEndpoints& endpoints, const InFlight& batch) {
  if (endpoints.forward_url.empty() || batch.fresh.empty()) return "";
  json events = json::array();
  for (const DeliveryEvent* event : batch.fresh) events.push_back(event->to_json(audit_.recipient_hash(event->recipient)));
  HttpRequest post;
  post.url = endpoints.forward_url;
  post.content_type = "application/json";
  post.body = events.dump(-1, ' ', false, json::error_handler_t::replace);
  post.headers.emplace_back("X-Mailrelay-Signature", forward_signature(endpoints.forward_key, unix_now(), post.body));
  post.headers.emplace_back("X-Request-Id", batch.request.request_id);
  if (!transport_) return "no transport";
  auto sent = transport_->post(post, kForwardTimeout);
  return !sent ? std::string(sent.error().message)
               : sent.value().status / 100 != 2 ? "HTTP " + std::to_string(sent.value().status) : "";
}

std::int64_t EventService::unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(clock_.wall_now().time_since_epoch()).count();
}

}  // namespace mailrelay
