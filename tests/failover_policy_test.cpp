#include <catch2/catch.hpp>

#include "failover_policy.h"

using namespace mailrelay;
using std::chrono::milliseconds;

namespace {
AttemptResult result(AttemptOutcome outcome, bool may_have_been_sent = false,
                     std::optional<milliseconds> retry_after = std::nullopt) {
  AttemptResult r;
  r.outcome = outcome;
  r.may_have_been_sent = may_have_been_sent;
  r.retry_after = retry_after;
  return r;
}
}  // namespace

TEST_CASE("failover decisions", "[failover_policy]") {
  FailoverPolicy policy;  // max_retries 1, failover on timeout
  const milliseconds plenty(10000);
  SECTION("sent stops as accepted") {
    auto d = policy.after_attempt(result(AttemptOutcome::kSent), 1, plenty, 0.5);
    CHECK(d.step == NextStep::kStop);
    CHECK(d.reason == StopReason::kAccepted);
  }
  SECTION("rejected moves on without retrying") {
    CHECK(policy.after_attempt(result(AttemptOutcome::kRejected), 1, plenty, 0.5).step == NextStep::kNextProvider);
  }
  SECTION("skipped moves on") {
    CHECK(policy.after_attempt(result(AttemptOutcome::kSkipped), 1, plenty, 0.5).step == NextStep::kNextProvider);
  }
  SECTION("error retries the same provider up to max_retries, then moves on") {
    auto first = policy.after_attempt(result(AttemptOutcome::kError), 1, plenty, 0.0);
    CHECK(first.step == NextStep::kRetrySameProvider);
    CHECK(first.delay == milliseconds(50));
    CHECK(policy.after_attempt(result(AttemptOutcome::kError), 2, plenty, 0.0).step == NextStep::kNextProvider);
  }
  SECTION("a surely-unsent timeout (connect) is retried like an error") {
    CHECK(policy.after_attempt(result(AttemptOutcome::kTimeout, false), 1, plenty, 0.0).step ==
          NextStep::kRetrySameProvider);
  }
  SECTION("an ambiguous failure never retries the same provider") {
    for (auto outcome : {AttemptOutcome::kTimeout, AttemptOutcome::kError}) {
      CHECK(policy.after_attempt(result(outcome, true), 1, plenty, 0.0).step == NextStep::kNextProvider);
    }
  }
  SECTION("with failover_on_timeout=false an ambiguous failure stops") {
    FailoverPolicy strict;
    strict.failover_on_timeout = false;
    auto d = strict.after_attempt(result(AttemptOutcome::kTimeout, true), 1, plenty, 0.0);
    CHECK(d.step == NextStep::kStop);
    CHECK(d.reason == StopReason::kAmbiguousTimeout);
    // ...but a failure before sending still retries: it cannot cause a duplicate.
    CHECK(strict.after_attempt(result(AttemptOutcome::kError, false), 1, plenty, 0.0).step ==
          NextStep::kRetrySameProvider);
  }
  SECTION("Retry-After is honoured when it fits the deadline, else the next provider is tried") {
    auto fits = policy.after_attempt(result(AttemptOutcome::kError, false, milliseconds(2000)), 1, plenty, 0.9);
    CHECK(fits.step == NextStep::kRetrySameProvider);
    CHECK(fits.delay == milliseconds(2000));
    auto too_long = policy.after_attempt(result(AttemptOutcome::kError, false, milliseconds(20000)), 1, plenty, 0.9);
    CHECK(too_long.step == NextStep::kNextProvider);
  }
  SECTION("no retry when the backoff would eat the rest of the deadline") {
    CHECK(policy.after_attempt(result(AttemptOutcome::kError), 1, milliseconds(40), 0.0).step == NextStep::kNextProvider);
  }
}

TEST_CASE("backoff is exponential, jittered within [ceiling/2, ceiling], and capped", "[failover_policy]") {
  FailoverPolicy policy;
  CHECK(policy.backoff(1, 0.0) == milliseconds(50));
  CHECK(policy.backoff(1, 0.999) == milliseconds(99));
  CHECK(policy.backoff(2, 0.0) == milliseconds(100));
  CHECK(policy.backoff(3, 0.5) == milliseconds(300));
  CHECK(policy.backoff(30, 1.0) <= policy.backoff_cap);
  CHECK(policy.backoff(30, 0.0) == policy.backoff_cap / 2);
}
