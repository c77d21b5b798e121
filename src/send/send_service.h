// SendService: POST /v1/send from request to answer, knowing nothing of HTTP libraries: admission
// (--max-in-flight), authentication, validation, suppressions, idempotency and the relay. It returns one
// SendReport that the answer, the audit line and the idempotency cache all use. Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "api_error.h"
#include "clock.h"
#include "email.h"
#include "provider_control.h"
#include "state_store.h"
#include "suppressions.h"
#include "metrics.h"
#include "relay.h"
#include "runtime.h"

namespace mailrelay {

struct SendRequest {
  std::string request_id;
  Clock::TimePoint started{};          // when the request arrived: the deadline counts from here
  std::optional<std::string> client;   // the caller, as the access phase authorized it (send scope); nullopt without tokens
  std::string content_type;
  std::optional<std::string> idempotency_key;
  std::string body;                    // consumed: freed once parsed
  std::string received_at;             // UTC; set by SendService::handle
};

struct SendReport {
  int status = 200;
  nlohmann::ordered_json body;         // the answer's JSON
  std::vector<std::pair<std::string, std::string>> headers;  // Retry-After, WWW-Authenticate, ...
  std::optional<std::string> client;   // token name
  std::string outcome;                 // "sent", "replayed", or the error code
  std::string replay_of;               // replays: the request id of the first answer
  std::string refused_by;              // the limit that refused it: max_in_flight, body_budget, rate_limit
  bool store_unavailable = false;      // the state store failed and the send went on without it
  std::optional<Email> email;          // when the body parsed
  std::optional<RelayResult> relay;    // when the relay ran
};

// POST /v1/send/batch (README "Batches"): the batch's own answer and each message's report.
struct BatchReport {
  int status = 200;                    // 200: every message sent; 207: some not (see results)
  nlohmann::ordered_json body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<std::string> client;
  std::string outcome;                 // "batch", or the error code when the batch itself is refused
  std::vector<std::string> ids;        // each message's request id, in order
  std::vector<SendReport> items;       // each message's report, in order (empty when refused)
};

class SendService {
 public:
  // `control` (may be null): the operators' provider overrides. `suppressions` (may be null):
  // recipients refused with 422 recipient_suppressed.
  SendService(StateStore& store, ProviderControl* control, Suppressions* suppressions, Metrics& metrics,
              std::size_t max_in_flight);

  SendReport handle(const Runtime& runtime, SendRequest request);
  // Up to `max_batch` messages, each one a send of its own (its request id "<id>.<index>", its
  // rate-limit count, admission, validation, suppression check, idempotency key, relay and
  // status), run concurrently within the batch request's deadline.
  BatchReport handle_batch(const Runtime& runtime, SendRequest request, std::size_t max_batch);

  // Sends being handled now (the mailrelay_in_flight gauge).
  std::size_t in_flight() const { return in_flight_; }
  // Request ids of the sends being handled now (logged when a shutdown abandons them).
  std::vector<std::string> in_flight_ids() const;

 private:
  // The steps of a send once admitted (in flight, not rate limited).
  struct IdempotencyClaim {
    std::string client, key, digest;
  };
  struct Failure {
    int status;
    std::string code, message, retry_after;  // retry_after "" for none
  };
  std::vector<SendRequest> batch_items(const SendRequest& batch, nlohmann::json& messages, BatchReport& report);
  bool refused_by_rate_limit(const Runtime& runtime, const std::string& id, SendReport& report);
  bool admit(const std::string& id, SendReport& report);
  SendReport admitted(const Runtime& runtime, SendRequest& request, const std::string& client);
  bool refused_as_suppressed(const std::string& id, SendReport& report);
  bool claimed(const IdempotencyClaim& claim, std::chrono::milliseconds ttl, const std::string& id, SendReport& report);
  void remember(const IdempotencyClaim& claim, const std::string& id, const SendReport& report);
  void relay(const Runtime& runtime, const SendRequest& request, SendReport& report);
  static Failure failure_of(const Runtime& runtime, const RelayResult& result);

  StateStore& store_;
  ProviderControl* control_;
  Suppressions* suppressions_;
  Metrics& metrics_;
  const std::size_t max_in_flight_;
  std::atomic<std::size_t> in_flight_{0};
  mutable std::mutex ids_mutex_;  // guards ids_
  std::multiset<std::string> ids_;  // guarded by ids_mutex_
};

}  // namespace mailrelay
