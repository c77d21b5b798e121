// FakeClock: time moves only when a test (or a sleeping relay) moves it. Thread-safe.
#pragma once

#include <mutex>
#include <vector>

#include "clock.h"

namespace fakes {

class FakeClock final : public mailrelay::Clock {
 public:
  TimePoint now() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return now_;
  }
  std::chrono::system_clock::time_point wall_now() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::chrono::system_clock::time_point(std::chrono::hours(24 * 365 * 56)) + (now_ - TimePoint());
  }
  void sleep_for(std::chrono::milliseconds d) override {
    std::lock_guard<std::mutex> lock(mutex_);
    sleeps_.push_back(d);
    now_ += d;
  }
  void advance(std::chrono::milliseconds d) {
    std::lock_guard<std::mutex> lock(mutex_);
    now_ += d;
  }
  std::vector<std::chrono::milliseconds> sleeps() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sleeps_;
  }

 private:
  std::mutex mutex_;
  TimePoint now_{std::chrono::hours(1)};
  std::vector<std::chrono::milliseconds> sleeps_;
};

}  // namespace fakes
