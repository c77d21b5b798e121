// FailoverPolicy: what the relay does after one attempt (retry here, move on, or stop) and why it
// stopped. Immutable and pure; thread-safe. Per-request state lives in Relay.
#pragma once

#include <chrono>
#include <string_view>

#include "email_provider.h"

namespace mailrelay {

enum class StopReason {
  kAccepted,           // a provider accepted the message
  kAllProvidersFailed, // every provider was tried (or skipped) and none accepted
  kDeadline,           // the request deadline ran out
  kAmbiguousTimeout,   // a provider may have accepted it and --failover-on-timeout=false
  kNoProviderAvailable, // every provider was skipped (circuit open or parked): nothing was sent
  kAuditUnavailable,   // an attempt line could not be written, so no provider was called
};

enum class NextStep { kStop, kRetrySameProvider, kNextProvider };

struct Decision {
  NextStep step = NextStep::kNextProvider;
  std::chrono::milliseconds delay{0};        // wait before the retry
  StopReason reason = StopReason::kAccepted; // when step == kStop
};

struct FailoverPolicy {
  int max_retries = 1;                            // extra tries on one provider for kError
  bool failover_on_timeout = true;
  std::chrono::milliseconds backoff_base{100};    // first retry waits base/2..base
  std::chrono::milliseconds backoff_cap{2000};

  // `try_number` counts from 1 on the current provider; `time_left` is what remains of the
  // request deadline; `jitter` is uniform in [0, 1).
  Decision after_attempt(const AttemptResult& result, int try_number,
                         std::chrono::milliseconds time_left, double jitter) const;

  // Jittered exponential backoff ("equal jitter"): half fixed, half random.
  std::chrono::milliseconds backoff(int try_number, double jitter) const;
};

}  // namespace mailrelay
