// Metrics: counters, gauges and histograms for /metrics (Prometheus text format 0.0.4) and the
// per-provider view of /v1/providers. A short writer of our own: prometheus-cpp would add a
// registry, a second HTTP server or glue code for what is a page of text. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "audit_log.h"
#include "relay.h"
#include "state_store.h"

namespace mailrelay {

// A latency histogram in seconds with fixed buckets.
class Histogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                     0.5,   1,    2.5,   5,    10,  30};
  void observe(double seconds);
  // Appends the _bucket/_sum/_count lines of `name` with `labels` ("" or `provider="x"`).
  void write(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<std::uint64_t>, kBounds.size()> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_micros_{0};
};

// What the connection layer reports at render time.
struct DoorGauges {
  std::size_t queue_depth = 0;    // fibers ready to run, waiting for their loop
  std::size_t event_threads = 0;  // event-loop threads
  std::size_t connections = 0;     // open client connections
  std::uint64_t body_bytes = 0;    // request bodies held in memory
  std::uint64_t evicted = 0;       // connections closed at --max-connections to admit new ones
  std::uint64_t refused = 0;       // connections refused: --max-connections-per-ip, or no room
};

// What the other parts report at render time (each counts its own; Metrics writes the text).
struct MetricsSnapshot {
  DoorGauges door;
  std::vector<std::pair<std::string, CircuitState>> circuits;  // by provider, in order; empty without health
  AuditCounters audit;
  StateStoreCounters store;
  std::size_t in_flight = 0;      // sends being handled now (SendService counts them)
  std::size_t max_in_flight = 0;
};

class Metrics final : public AttemptObserver {
 public:
  explicit Metrics(std::string version) : version_(std::move(version)) {}

  bool before_attempt(const std::string&, const std::string&, int) override { return true; }
  void after_attempt(const std::string& request_id, const Attempt& attempt) override;

  // One HTTP request answered: by route and status; for /v1/send also its duration and relay.
  void request(const std::string& route, int status, double seconds, const RelayResult* relay);
  void idempotent_replay() { ++replays_; }
  // A request refused by a limit (max_in_flight, body_budget): counted by that limit.
  void refused(const std::string& limit);
  // README "Delivery events and suppressions": a verified delivery event, by provider and type; a webhook request's outcome
  // (accepted, invalid_signature, duplicate, forward_failed, ...); a send refused for a suppressed recipient.
  void delivery_event(const std::string& provider, const std::string& type);
  void webhook(const std::string& provider, const std::string& outcome);
  void suppressed_send() { ++suppressed_sends_; }

  // Prometheus text exposition (GET /metrics).
  std::string render(const MetricsSnapshot& now) const;
  // Counters and last error of one provider, for /v1/providers.
  nlohmann::ordered_json provider_json(const std::string& provider) const;

 private:
  struct ProviderStats {
    std::map<std::string, std::uint64_t> outcomes;
    std::string last_error;
    std::string last_error_at;
    Histogram latency;
  };

  // Each appends part of render()'s text.
  void render_traffic(std::string& out) const;          // REQUIRES: mutex_ held
  void render_refusals_and_events(std::string& out) const;  // REQUIRES: mutex_ held
  static void render_gauges(std::string& out, const MetricsSnapshot& now);

  const std::string version_;  // constant after construction
  mutable std::mutex mutex_;   // guards requests_, providers_, failovers_, refused_, delivery_events_, webhooks_
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  std::map<std::string, ProviderStats> providers_;
  std::uint64_t failovers_ = 0;
  std::map<std::string, std::uint64_t> refused_;  // by limit
  std::map<std::pair<std::string, std::string>, std::uint64_t> delivery_events_;  // by provider, type
  std::map<std::pair<std::string, std::string>, std::uint64_t> webhooks_;         // by provider, outcome
  std::atomic<std::uint64_t> suppressed_sends_{0};
  Histogram send_duration_;
  std::atomic<std::uint64_t> replays_{0};
};

}  // namespace mailrelay
