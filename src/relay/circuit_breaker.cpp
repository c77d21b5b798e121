#include "circuit_breaker.h"

#include <algorithm>
#include <cmath>

#include "text_helpers.h"

namespace mailrelay {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {
// A probe that has not reported by then (its request ended without a result) is given up, so
// that a half-open circuit can never wait forever. Longer than any attempt timeout.
constexpr std::chrono::seconds kProbeLost{120};
constexpr std::chrono::minutes kMaxPark{5};  // README "Provider health and the retry budget": throttling parks at most this long
}  // namespace

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
  ++b.generation;
  b.probe_in_flight = false;
}

void ProviderHealth::refresh(const std::string& provider, Breaker& b) {
  if (clock_.now() < b.until) return;
  if (b.state == CircuitState::kOpen) transition(provider, b, CircuitState::kHalfOpen, "cool-down over, probing");
  if (b.state == CircuitState::kParked) transition(provider, b, CircuitState::kClosed, "Retry-After period over");
}

ProviderHealth::Admission ProviderHealth::admit(const std::string& provider) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  refresh(provider, b);
  Admission a;
  a.generation = b.generation;
  auto left = [&] { return std::to_string(duration_cast<milliseconds>(b.until - clock_.now()).count()) + " ms"; };
  switch (b.state) {
    case CircuitState::kClosed:
      a.admitted = true;
      break;
    case CircuitState::kOpen:
      a.reason = "circuit open after " + std::to_string(b.consecutive_failures) + " consecutive failures; next probe in " + left();
      break;
    case CircuitState::kParked:
      a.reason = "throttled by the provider (a 429 or its own throttling error); parked for " + left();
      break;
    case CircuitState::kHalfOpen:
      if (b.probe_in_flight && clock_.now() - b.probe_since < kProbeLost) {
        a.reason = "circuit half-open; a probe request is in flight";
        break;
      }
      if (b.probe_in_flight) ++b.generation;  // the lost probe's late result no longer counts
      b.probe_in_flight = true;
      b.probe_since = clock_.now();
      a.generation = b.generation;
      a.admitted = a.probe = true;
      break;
  }
  return a;
}

void ProviderHealth::record(const std::string& provider, const Admission& admission, const AttemptResult& result) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  // Admitted before the last state change (before the trip, say): it neither trips the circuit
  // again, nor extends its cool-down, nor decides a half-open circuit.
  if (admission.generation != b.generation) return;
  const bool probe = admission.probe;
  if (probe) b.probe_in_flight = false;
  if (result.throttled && result.retry_after && result.retry_after->count() > 0) {
    // Throttling is the provider working as designed, not a failure: park it as long as it
    // asked (Retry-After or its own signal), at most 5 minutes (README "Provider health and the retry budget"), and keep the
    // failure count as it was.
    const milliseconds park = std::min<milliseconds>(*result.retry_after, kMaxPark);
    b.until = clock_.now() + park;
    transition(provider, b, CircuitState::kParked, "throttled: parked for " + std::to_string(park.count()) + " ms");
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

void ProviderHealth::release(const std::string& provider, const Admission& admission) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker& b = breakers_[provider];
  if (admission.probe && admission.generation == b.generation) b.probe_in_flight = false;
}

std::size_t size_class(std::size_t message_bytes) {
  if (message_bytes < 64 * 1024) return 0;
  return message_bytes < 1024 * 1024 ? 1 : 2;
}

void ProviderHealth::observe(const std::string& provider, std::size_t size_class, double latency_ms, bool failed) {
  std::lock_guard<std::mutex> lock(mutex_);
  Breaker::Window& w = breakers_[provider].windows[std::min(size_class, kSizeClasses - 1)];
  w.latency_ms[w.calls % kFigureWindow] = latency_ms;
  w.failed[w.calls % kFigureWindow] = failed;
  ++w.calls;
  w.last_call = clock_.now();
}

ProviderFigures ProviderHealth::figures(const std::string& provider, std::size_t size_class) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Breaker::Window& w = breakers_[provider].windows[std::min(size_class, kSizeClasses - 1)];
  ProviderFigures f;
  f.calls = w.calls;
  f.last_call = w.last_call;
  const std::size_t n = std::min<std::uint64_t>(w.calls, kFigureWindow);
  for (std::size_t i = 0; i < n; ++i) {
    f.latency_ms += w.latency_ms[i] / static_cast<double>(n);
    f.error_rate += w.failed[i] ? 1.0 / static_cast<double>(n) : 0.0;
  }
  return f;
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
