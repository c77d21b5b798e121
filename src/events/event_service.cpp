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
  const ProviderWebhook& webhook = *descriptor->webhook;
  auto refuse = [&](int status, const std::string& code, const std::string& message) {
    metrics_.webhook(provider, code);
    return refusal(status, id, code, message);
  };
  // Nothing deeper than any provider nests is parsed, signed or not (a body of a million '[').
  if (json_nesting_depth(request.body, kMaxWebhookDepth) > kMaxWebhookDepth) {
    return refuse(400, "invalid_request", "JSON nested deeper than " + std::to_string(kMaxWebhookDepth) + " levels");
  }
  // Verify first: nothing from an unverified request is recorded, not even a replay id.
  const Result<std::string> timestamp = webhook.verify(secret->second, request);
  if (!timestamp) {
    WebhookReport r = refuse(401, "invalid_signature", timestamp.error().message);
    if (!webhook.challenge.empty()) r.headers.emplace_back("WWW-Authenticate", webhook.challenge);
    return r;
  }
  const auto signed_at = unix_seconds(timestamp.value());
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(clock_.wall_now().time_since_epoch()).count();
  if (webhook.signed_timestamp && (!signed_at || std::llabs(now - *signed_at) > kMaxSkew.count())) {
    return refuse(401, "invalid_signature",
                  "the signed timestamp is more than " + std::to_string(kMaxSkew.count()) + " s from now (stale or replayed)");
  }
  const Result<WebhookBatch> batch = webhook.parse(request, signed_at.value_or(0));
  if (!batch) return refuse(400, "invalid_request", batch.error().message);

  // Replays: an event id seen within the window is answered 200 and ignored.
  std::vector<const DeliveryEvent*> fresh;
  std::vector<std::string> claimed;
  auto forget_claims = [&] {
    for (const auto& key : claimed) store_.forget_event(key);
  };
  auto unavailable = [&] {
    forget_claims();
    WebhookReport r = refuse(503, "state_store_unavailable", "the state store is unreachable; retry later");
    r.headers.emplace_back("Retry-After", "60");
    return r;
  };
  std::size_t duplicates = 0;
  for (const auto& event : batch.value().events) {
    if (!event.replay_key.empty()) {
      const std::string key = sha256_hex(provider + "\n" + event.replay_key);
      auto first = store_.claim_event(key, kReplayWindow);
      if (!first) return unavailable();
      if (!first.value()) {
        ++duplicates;
        continue;
      }
      claimed.push_back(key);
    }
    fresh.push_back(&event);
  }
  // Suppressions before anything else is told: a failure here leaves nothing half done.
  for (const DeliveryEvent* event : fresh) {
    if (!event->suppresses || event->recipient.find('@') == std::string::npos) continue;
    Suppression why{event->type, redact_addresses(event->reason), provider, event->occurred_at};
    if (why.since.empty()) why.since = utc_timestamp(clock_);
    if (!suppressions_.add(event->recipient, why)) return unavailable();
  }
  // The app takes the batch or the provider retries it (its retries are the queue).
  if (!endpoints.forward_url.empty() && !fresh.empty()) {
    json events = json::array();
    for (const DeliveryEvent* event : fresh) events.push_back(event->to_json(audit_.recipient_hash(event->recipient)));
    HttpRequest post;
    post.url = endpoints.forward_url;
    post.content_type = "application/json";
    post.body = events.dump(-1, ' ', false, json::error_handler_t::replace);
    post.headers.emplace_back("X-Mailrelay-Signature", forward_signature(endpoints.forward_key, now, post.body));
    post.headers.emplace_back("X-Request-Id", id);
    std::string problem = "no transport";
    if (transport_) {
      auto sent = transport_->post(post, kForwardTimeout);
      problem = !sent ? std::string(sent.error().message)
                      : sent.value().status / 100 != 2 ? "HTTP " + std::to_string(sent.value().status) : "";
    }
    if (!problem.empty()) {
      forget_claims();
      log_.warn("events: forwarding {} {} event(s) failed ({}); answering 503 so that {} retries", fresh.size(),
                provider, problem, provider);
      return refuse(503, "forward_failed", "the application did not take the events (" + problem + "); retry later");
    }
  }
  for (const DeliveryEvent* event : fresh) {
    audit_.delivery(*event);
    metrics_.delivery_event(provider, event->type);
  }
  const std::string outcome = fresh.empty() && duplicates > 0 ? "duplicate" : "accepted";
  metrics_.webhook(provider, outcome);
  return answer(200, outcome,
                json{{"request_id", id},
                     {"accepted", fresh.size()},
                     {"duplicates", duplicates},
                     {"ignored", batch.value().ignored}});
}

}  // namespace mailrelay
