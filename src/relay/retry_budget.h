// RetryBudget: caps retries across all requests at a share of live traffic (Envoy's retry
// budget), so that an outage does not multiply the load on a failing provider. Counts requests
// and retries over the current and the previous window. Thread-safe.
#pragma once

#include <chrono>
#include <mutex>

#include "clock.h"

namespace mailrelay {

struct RetryBudgetSettings {
  double ratio = 0.2;                     // retries allowed per request (Envoy: 20%)
  int minimum = 3;                        // always allowed per window, for low traffic
  std::chrono::milliseconds window{10000};
};

class RetryBudget {
 public:
  RetryBudget(RetryBudgetSettings settings, Clock& clock);
  void on_request();
  // True (and counted) when one more retry fits the budget.
  bool try_spend();

 private:
  void roll();  // REQUIRES: mutex_ held
  RetryBudgetSettings settings_;
  Clock& clock_;
  std::mutex mutex_;  // guards the window below (settings_ is constant)
  Clock::TimePoint window_start_;              // guarded by mutex_
  long requests_ = 0, retries_ = 0;            // guarded by mutex_; current window
  long last_requests_ = 0, last_retries_ = 0;  // guarded by mutex_; previous window
};

}  // namespace mailrelay
