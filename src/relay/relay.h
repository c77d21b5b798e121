// Relay: sends one message by trying providers in order under one deadline, recording every
// attempt. Thread-safe: per-request state lives on the stack of send().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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
// kAdaptive: the provider with the lowest score, its recent latency plus its error rate times the
// attempt timeout (a failure costs about a timeout and a failover), among those not open or parked.
enum class Strategy { kFailover, kRoundRobin, kWeighted, kAdaptive };

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

 private:
  std::vector<EmailProvider*> providers_;
  RelaySettings settings_;
  Clock& clock_;
  // The order for one request: the operators' order if they set one, else the strategy's first
  // choice, then the others as configured.
  std::vector<EmailProvider*> order(const ProviderOverrides* overrides);
  std::size_t adaptive_first();
  // Every observer took the attempt's "before" line.
  bool recorded(const std::string& request_id, const std::string& provider, int try_number);
  std::optional<std::string> skip_reason(EmailProvider& provider, const Email& email, const ProviderOverrides* overrides,
                                         ProviderHealth::Admission& admission);

  ProviderHealth* health_;
  RetryBudget* budget_;
  std::atomic<std::uint64_t> turn_{0};  // round-robin position
  std::vector<AttemptObserver*> observers_;
  Jitter jitter_;
};

}  // namespace mailrelay
