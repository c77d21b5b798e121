// Clock: the source of time for deadlines, latencies and backoff sleeps, so tests never sleep.
// SystemClock is thread-safe; its sleep suspends a fiber instead of blocking its event loop.
#pragma once

#include <chrono>
#include <thread>

#include "event_loop.h"
#include "text_helpers.h"

namespace mailrelay {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() = 0;
  virtual std::chrono::system_clock::time_point wall_now() = 0;
  virtual void sleep_for(std::chrono::milliseconds duration) = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point wall_now() override { return std::chrono::system_clock::now(); }
  void sleep_for(std::chrono::milliseconds duration) override { mailrelay::sleep_for(duration); }  // a fiber suspends
};

// Now, as the audit log writes times.
inline std::string utc_timestamp(Clock& clock) { return utc_text(clock.wall_now()); }

inline double to_ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace mailrelay
