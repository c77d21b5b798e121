#include "circuit_breaker.h"

#include <algorithm>

#include "audit_log.h"

namespace mailrelay {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string_view to_string(CircuitState state) {
  switch (state) {
    case CircuitState::kClosed: return "closed";
    case CircuitState::kOpen: return "open";
    case CircuitState::kHalfOpen: return "half_open";
    case CircuitState::kParked: return "parked";
  }
  return "closed";
}

ProviderHealth::ProviderHealth(BreakerSettings settings, Clock& clock, spdlog::logger& log)
    : settings_(settings), clock_(clock), log_(log) {}

void ProviderHealth::transition(const std::string& provider, Breaker& b, CircuitState to, const std::string& why) {
  if (b.state == to) return;
  log_.warn("provider {}: circuit {} -> {}: {}", provider, to_string(b.state), to_string(to), why);
  b.state = to;
}

void ProviderHealth::refresh(const std::string& provider, Breaker& b) {
  if (clock_.now() < b.until) return;
  if (b.state == CircuitState::kOpen) transition(provider, b, CircuitState::kHalfOpen, "cool-down over, probing");
  if (b.state == CircuitState::kParked) transition(provider, b, CircuitState::kClosed, "Retry-After period over");
}

bool ProviderHealth::admit(const std::string& provider, std::string& reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  refresh(provider, b);
  auto left = [&] { return std::to_string(duration_cast<milliseconds>(b.until - clock_.now()).count()) + " ms"; };
  switch (b.state) {
    case CircuitState::kClosed:
      return true;
    case CircuitState::kOpen:
      reason = "circuit open after " + std::to_string(b.consecutive_failures) + " consecutive failures; next probe in " + left();
      return false;
    case CircuitState::kParked:
      reason = "throttled by the provider (429 Retry-After); parked for " + left();
      return false;
    case CircuitState::kHalfOpen:
      if (b.probe_in_flight) {
        reason = "circuit half-open; a probe request is in flight";
        return false;
      }
      b.probe_in_flight = true;
      return true;
  }
  return true;
}

void ProviderHealth::record(const std::string& provider, const AttemptResult& result) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  const bool probe = b.state == CircuitState::kHalfOpen;
  if (probe) b.probe_in_flight = false;
  if (result.http_status == 429 && result.retry_after && result.retry_after->count() > 0) {
    // Throttling is the provider working as designed, not a failure: park it exactly as long
    // as it asked, and keep the failure count as it was.
    b.until = clock_.now() + *result.retry_after;
    transition(provider, b, CircuitState::kParked,
               "429 with Retry-After " + std::to_string(result.retry_after->count()) + " ms");
    return;
  }
  // A sent message or a rejection of this message both show a provider that works.
  const bool healthy = result.outcome == AttemptOutcome::kSent || result.outcome == AttemptOutcome::kRejected;
  if (healthy) {
    b.consecutive_failures = 0;
    if (probe) {
      b.trips = 0;
      transition(provider, b, CircuitState::kClosed, "probe succeeded");
    }
    return;
  }
  ++b.consecutive_failures;
  if (probe || b.consecutive_failures >= settings_.failure_threshold) {
    auto cooldown = settings_.base_cooldown * (1LL << std::min(b.trips, 16));
    cooldown = std::min<milliseconds>(cooldown, settings_.max_cooldown);
    ++b.trips;
    b.until = clock_.now() + cooldown;
    transition(provider, b, CircuitState::kOpen,
               (probe ? std::string("probe failed") : std::to_string(b.consecutive_failures) + " consecutive failures") +
                   " (last: " + redact_addresses(result.error) + "); cool-down " + std::to_string(cooldown.count()) + " ms");
  }
}

CircuitState ProviderHealth::state(const std::string& provider) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  refresh(provider, b);
  return b.state;
}

milliseconds ProviderHealth::wait(const std::string& provider) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  refresh(provider, b);
  if (b.state != CircuitState::kOpen && b.state != CircuitState::kParked) return milliseconds(0);
  return std::max(milliseconds(0), duration_cast<milliseconds>(b.until - clock_.now()));
}

}  // namespace mailrelay
