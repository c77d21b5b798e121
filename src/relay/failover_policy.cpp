#include "failover_policy.h"

#include <algorithm>

namespace mailrelay {

std::chrono::milliseconds FailoverPolicy::backoff(int try_number, double jitter) const {
  std::chrono::milliseconds ceiling = backoff_base * (1LL << std::min(try_number - 1, 16));
  ceiling = std::min(ceiling, backoff_cap);
  auto half = ceiling / 2;
  return half + std::chrono::milliseconds(static_cast<long long>(jitter * static_cast<double>(half.count())));
}

Decision FailoverPolicy::after_attempt(const AttemptResult& result, int try_number,
                                       std::chrono::milliseconds time_left, double jitter) const {
  switch (result.outcome) {
    case AttemptOutcome::kSent:
      return {NextStep::kStop, {}, StopReason::kAccepted};
    case AttemptOutcome::kRejected:
    case AttemptOutcome::kSkipped:
      // A refusal is about this message at this provider: retrying it cannot help, and the next
      // provider cannot cause a duplicate because this one surely did not accept it.
      return {NextStep::kNextProvider, {}, {}};
    case AttemptOutcome::kTimeout:
    case AttemptOutcome::kError:
      break;
  }
  if (result.may_have_been_sent) {
    // Ambiguous: the provider may have the message. Retrying here would risk the same duplicate
    // as failing over, so we never retry the same provider; whether to fail over is the caller's.
    if (!failover_on_timeout) return {NextStep::kStop, {}, StopReason::kAmbiguousTimeout};
    return {NextStep::kNextProvider, {}, {}};
  }
  if (try_number > max_retries) return {NextStep::kNextProvider, {}, {}};
  auto delay = result.retry_after ? *result.retry_after : backoff(try_number, jitter);
  // Retry only if the wait leaves time for the attempt itself; a Retry-After beyond the deadline
  // means this provider will not help this request.
  if (delay >= time_left) return {NextStep::kNextProvider, {}, {}};
  return {NextStep::kRetrySameProvider, delay, {}};
}

}  // namespace mailrelay
