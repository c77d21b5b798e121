#include "relay.h"

#include <random>

namespace mailrelay {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

const Attempt* RelayResult::accepted() const {
  for (const auto& a : attempts) {
    if (a.result.outcome == AttemptOutcome::kSent) return &a;
  }
  return nullptr;
}

Relay::Relay(std::vector<EmailProvider*> providers, RelaySettings settings, Clock& clock, Jitter jitter)
    : providers_(std::move(providers)), settings_(settings), clock_(clock), jitter_(std::move(jitter)) {
  if (!jitter_) {
    jitter_ = [] {
      thread_local std::mt19937_64 engine{std::random_device{}()};
      return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
    };
  }
}

RelayResult Relay::send(const Email& email, const std::string& request_id, Clock::TimePoint started) {
  RelayResult out;
  const auto deadline = started + settings_.deadline;
  auto time_left = [&] { return duration_cast<milliseconds>(deadline - clock_.now()); };

  for (EmailProvider* provider : providers_) {
    for (int try_number = 1;; ++try_number) {
      milliseconds left = time_left();
      if (left.count() <= 0) {
        out.reason = StopReason::kDeadline;
        return out;
      }
      auto begin = clock_.now();
      Attempt attempt{provider->name(), try_number,
                      provider->send(email, request_id, std::min(settings_.attempt_timeout, left)), 0};
      attempt.latency_ms = to_ms(clock_.now() - begin);
      out.attempts.push_back(attempt);

      Decision d = settings_.policy.after_attempt(attempt.result, try_number, time_left(), jitter_());
      if (d.step == NextStep::kStop) {
        out.reason = d.reason;
        return out;
      }
      if (d.step == NextStep::kNextProvider) break;
      clock_.sleep_for(d.delay);
    }
  }
  // Out of providers. If the last one failed because the deadline cut its attempt short, the
  // deadline is the honest reason.
  out.reason = time_left().count() <= 0 ? StopReason::kDeadline : StopReason::kAllProvidersFailed;
  return out;
}

}  // namespace mailrelay
