// Relay: sends one message by trying providers in order under one deadline, recording every
// attempt. Thread-safe: per-request state lives on the stack of send().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "circuit_breaker.h"
#include "clock.h"
#include "retry_budget.h"
#include "email_provider.h"
#include "failover_policy.h"
#include "state_store.h"

namespace mailrelay {

// Which provider is tried first; the configured order after it stays the fallback.
// kAdaptive (SPEC §22): among the providers not open or parked, the one with the lowest score for
// the message's size class, its recent latency plus its error rate times the attempt timeout (a
// failure costs about a timeout and a failover). A provider later in the configured order must
// beat an earlier one by kAdaptiveMargin (of the earlier one's score, at least kAdaptiveMarginMs),
// so that noise does not move traffic between two healthy providers. Every kProbeEvery-th send of
// a size class, at most one a kProbeGap, goes first to another provider instead (the one measured
// longest ago): a provider that recovers is measured again and gets its traffic back.
enum class Strategy { kFailover, kRoundRobin, kWeighted, kAdaptive };
std::string_view to_string(Strategy strategy);  // failover, round-robin, weighted, adaptive
inline constexpr double kAdaptiveMargin = 0.25;
inline constexpr double kAdaptiveMarginMs = 10;
inline constexpr std::uint64_t kProbeEvery = 20;
inline constexpr std::chrono::seconds kProbeGap{1};

struct RelaySettings {
  Strategy strategy = Strategy::kFailover;
  std::vector<double> weights;  // kWeighted: one per provider, in provider order
  std::chrono::milliseconds attempt_timeout{3000};
  std::chrono::milliseconds deadline{10000};
  FailoverPolicy policy;
};

struct Attempt {
  std::string provider;
  int try_number = 1;
  AttemptResult result;
  double latency_ms = 0;
};

struct RelayResult {
  StopReason reason = StopReason::kAllProvidersFailed;
  std::vector<Attempt> attempts;
  const Attempt* accepted() const;  // the attempt that was sent, or nullptr
  int retries() const { return attempts.empty() ? 0 : static_cast<int>(attempts.size()) - 1; }
};

// The "attempts" array of answers and audit lines.
nlohmann::ordered_json attempts_to_json(const RelayResult& result);
// `attempts` (as attempts_to_json wrote them) with addresses in provider text redacted: what the
// audit log and the idempotency store keep (the answer itself keeps them).
nlohmann::ordered_json redacted_attempts(nlohmann::ordered_json attempts);

// Why the relay stopped, for the audit line: accepted, rejected_by_all, no_provider_left,
// no_provider_available, deadline, ambiguous_timeout or audit_unavailable.
std::string_view stop_reason_label(const RelayResult& result);

// Told before every provider call (the audit log's "attempt" line) and after it (metrics).
// before_attempt() returning false vetoes the call: the relay stops (kAuditUnavailable).
// Implementations are thread-safe.
class AttemptObserver {
 public:
  virtual ~AttemptObserver() = default;
  virtual bool before_attempt(const std::string& request_id, const std::string& provider, int try_number) = 0;
  virtual void after_attempt(const std::string& /*request_id*/, const Attempt& /*attempt*/) {}
};

class Relay {
 public:
  // Jitter returns a uniform value in [0, 1); the default draws from a per-thread engine.
  using Jitter = std::function<double()>;
  // REQUIRES: providers non-empty; they outlive the Relay.
  // `health` (may be null) decides which providers are skipped, `budget` (may be null) whether a
  // retry may be spent; observers are told in order. All outlive the Relay.
  Relay(std::vector<EmailProvider*> providers, RelaySettings settings, Clock& clock,
        ProviderHealth* health = nullptr, std::vector<AttemptObserver*> observers = {}, Jitter jitter = {},
        RetryBudget* budget = nullptr);

  // `started` is when the request arrived: the deadline counts from there. `overrides` (may be
  // null): the operators' order replaces the strategy's, and a provider switched off is skipped.
  RelayResult send(const Email& email, const std::string& request_id, Clock::TimePoint started,
                   const ProviderOverrides* overrides = nullptr);

  const RelaySettings& settings() const { return settings_; }
  // The order a small message would be tried in now, probes aside (GET /v1/providers).
  std::vector<std::string> current_order(const ProviderOverrides& overrides);

 private:
  std::vector<EmailProvider*> providers_;
  RelaySettings settings_;
  Clock& clock_;
  // The order for one request: the operators' order if they set one, else the strategy's first
  // choice, then the others as configured.
  std::vector<EmailProvider*> order(const ProviderOverrides* overrides, std::size_t size_class);
  std::size_t adaptive_best(std::size_t size_class);
  std::size_t adaptive_first(std::size_t size_class);
  // Every observer took the attempt's "before" line.
  bool recorded(const std::string& request_id, const std::string& provider, int try_number);
  std::optional<std::string> skip_reason(EmailProvider& provider, const Email& email, const ProviderOverrides* overrides,
                                         ProviderHealth::Admission& admission);

  ProviderHealth* health_;
  RetryBudget* budget_;
  std::atomic<std::uint64_t> turn_{0};  // round-robin position
  struct ProbeTurn {
    std::uint64_t sends = 0;  // of the size class since its last probe
    Clock::TimePoint last{};
  };
  std::mutex probe_mutex_;
  ProbeTurn probes_[kSizeClasses];  // guarded by probe_mutex_
  std::vector<AttemptObserver*> observers_;
  Jitter jitter_;
};

}  // namespace mailrelay
