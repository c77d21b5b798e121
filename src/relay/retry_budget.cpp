#include "retry_budget.h"

#include <algorithm>

namespace mailrelay {

RetryBudget::RetryBudget(RetryBudgetSettings settings, Clock& clock)
    : settings_(settings), clock_(clock), window_start_(clock.now()) {}

void RetryBudget::roll() {
  auto now = clock_.now();
  if (now - window_start_ < settings_.window) return;
  bool adjacent = now - window_start_ < 2 * settings_.window;
  last_requests_ = adjacent ? requests_ : 0;
  last_retries_ = adjacent ? retries_ : 0;
  requests_ = retries_ = 0;
  window_start_ = now;
}

void RetryBudget::on_request() {
  std::lock_guard<std::mutex> lock(mutex_);
  roll();
  ++requests_;
}

bool RetryBudget::try_spend() {
  std::lock_guard<std::mutex> lock(mutex_);
  roll();
  double allowed = std::max<double>(settings_.minimum, settings_.ratio * static_cast<double>(requests_ + last_requests_));
  if (static_cast<double>(retries_ + last_retries_) + 1 > allowed) return false;
  ++retries_;
  return true;
}

}  // namespace mailrelay
