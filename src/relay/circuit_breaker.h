// ProviderHealth: per-provider circuit breakers and throttling, shared by all requests (the only
// cross-request state of the send path). A provider that keeps failing is skipped for a cool-down
// that doubles on every trip, then one probe request decides whether it closes again; a 429 with
// Retry-After parks the provider for exactly that long. Every admission carries the breaker's
// generation: a result from before a state change (an attempt admitted before the trip) is
// ignored, so a circuit trips once per transition and only its probe decides a half-open
// circuit (README "Operating"). Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "clock.h"
#include "email_provider.h"

namespace mailrelay {

struct BreakerSettings {
  int failure_threshold = 5;                        // consecutive failures that open the circuit
  std::chrono::milliseconds base_cooldown{5000};    // first open period
  std::chrono::milliseconds max_cooldown{300000};   // doubling stops here (5 minutes)
};

enum class CircuitState { kClosed, kOpen, kHalfOpen, kParked };

// A provider's recent speed and errors for one size class of message (--strategy adaptive,
// GET /v1/providers, SPEC §22): the mean latency and the share of failures of its last
// kFigureWindow calls, sandbox sends not counted (the relay does not report them). A short window
// forgets a bad spell after that many calls: the relay's probes make them (relay.h).
struct ProviderFigures {
  double latency_ms = 0;   // of its calls, whatever their outcome; 0 before the first
  double error_rate = 0;   // 0..1: calls that failed (error or timeout; a rejection is an answer)
  std::uint64_t calls = 0;           // every call counted, not only the window's
  Clock::TimePoint last_call{};      // when the newest was reported
};
inline constexpr std::size_t kFigureWindow = 4;
// Messages are measured apart by size, so that uploads of large attachments do not move the
// traffic of small ones: under 64 KiB, under 1 MiB, larger (the bytes of the text, html and
// attachments as decoded).
inline constexpr std::size_t kSizeClasses = 3;
std::size_t size_class(std::size_t message_bytes);
std::string_view to_string(CircuitState state);

class ProviderHealth {
 public:
  ProviderHealth(BreakerSettings settings, Clock& clock, spdlog::logger& log);

  struct Admission {
    bool admitted = false;
    std::string reason;            // when not admitted: why (for the skipped attempt)
    std::uint64_t generation = 0;  // the breaker's state when admitted
    bool probe = false;            // the half-open circuit's one probe
    explicit operator bool() const { return admitted; }
  };
  // Whether `provider` may be called now. A half-open provider admits one probe at a time.
  Admission admit(const std::string& provider);
  // The outcome of a call that admit() allowed.
  void record(const std::string& provider, const Admission& admission, const AttemptResult& result);
  // An admitted call that was not made: a probe's turn goes to the next request.
  void release(const std::string& provider, const Admission& admission);

  // One call made to `provider` for a message of `size_class`, and how long it took.
  void observe(const std::string& provider, std::size_t size_class, double latency_ms, bool failed);
  ProviderFigures figures(const std::string& provider, std::size_t size_class = 0);

  CircuitState state(const std::string& provider);
  // Time until `provider` may be tried again (zero when it may be tried now).
  std::chrono::milliseconds wait(const std::string& provider);

 private:
  struct Breaker {
    CircuitState state = CircuitState::kClosed;
    int consecutive_failures = 0;
    int trips = 0;  // opens in a row without a successful probe in between
    Clock::TimePoint until{};  // end of the open or parked period
    std::uint64_t generation = 0;  // advanced on every state change
    bool probe_in_flight = false;
    Clock::TimePoint probe_since{};  // a probe whose result never came is given up after kProbeLost
    struct Window {
      double latency_ms[kFigureWindow] = {};
      bool failed[kFigureWindow] = {};
      std::uint64_t calls = 0;  // the next sample goes to calls % kFigureWindow
      Clock::TimePoint last_call{};
    };
    Window windows[kSizeClasses];
  };
  // REQUIRES: mutex_ held (both).
  void transition(const std::string& provider, Breaker& b, CircuitState to, const std::string& why);
  void refresh(const std::string& provider, Breaker& b);  // open/parked -> half-open/closed on time

  BreakerSettings settings_;
  Clock& clock_;
  spdlog::logger& log_;
  std::mutex mutex_;  // guards breakers_
  std::map<std::string, Breaker> breakers_;  // guarded by mutex_
};

}  // namespace mailrelay
