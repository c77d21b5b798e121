// EventService: the providers' webhooks (README "Delivery events and suppressions"), from request to answer, knowing
// nothing of HTTP libraries: verify the signature, refuse stale timestamps, ignore replays, learn
// suppressions, forward the batch to the app, write one "delivery" audit line per event. The
// relay keeps no queue: when a step fails the provider is answered 503 and retries later.
// Thread-safe.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "audit_log.h"
#include "clock.h"
#include "delivery_events.h"
#include "http_transport.h"
#include "metrics.h"
#include "provider_registry.h"
#include "runtime.h"
#include "state_store.h"
#include "suppressions.h"

namespace mailrelay {

struct WebhookReport {
  int status = 200;
  nlohmann::ordered_json body;
  std::string outcome;  // accepted, invalid_signature, invalid_request, duplicate, forward_failed, ...
  std::vector<std::pair<std::string, std::string>> headers;
};

class EventService {
 public:
  // Timestamps further than this from now are refused; event ids are remembered this long.
  static constexpr std::chrono::seconds kMaxSkew{300};
  static constexpr std::chrono::hours kReplayWindow{24};
  // The app gets this long to take a forwarded batch.
  static constexpr std::chrono::milliseconds kForwardTimeout{5000};

  EventService(StateStore& store, Suppressions& suppressions, AuditLog& audit, Metrics& metrics,
               HttpTransport* transport, Clock& clock, spdlog::logger& log)
      : store_(store), suppressions_(suppressions), audit_(audit), metrics_(metrics), transport_(transport),
        clock_(clock), log_(log) {}

  WebhookReport handle(const EventEndpoints& endpoints, const WebhookRequest& request);

 private:
  // One webhook request on its way through the steps.
  struct InFlight {
    const WebhookRequest& request;
    WebhookBatch parsed;
    std::vector<const DeliveryEvent*> fresh;  // not seen within the replay window
    std::vector<std::string> claimed;         // their replay keys, forgotten again if the request fails
    std::size_t duplicates;
  };
  WebhookReport refuse(const InFlight& batch, int status, const std::string& code, const std::string& message);
  std::optional<WebhookReport> verify(const ProviderWebhook& webhook, const std::string& secret, InFlight& batch);
  bool claim_fresh(InFlight& batch);
  void forget_claims(const InFlight& batch);
  static bool suppresses(const DeliveryEvent& event);  // an address to put on the list
  bool suppress(const InFlight& batch);
  std::string forward(const EventEndpoints& endpoints, const InFlight& batch);
  std::int64_t unix_now();

  StateStore& store_;
  Suppressions& suppressions_;
  AuditLog& audit_;
  Metrics& metrics_;
  HttpTransport* transport_;  // may be null: forwarding then fails (tests without a network)
  Clock& clock_;
  spdlog::logger& log_;
};

// X-Mailrelay-Signature for `body` at unix time `t`: t=<t>,v1=<hex HMAC-SHA256(key, t + "." + body)>.
std::string forward_signature(const std::string& key, std::int64_t t, const std::string& body);

}  // namespace mailrelay
