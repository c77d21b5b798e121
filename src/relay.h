// Relay: sends one message by trying providers in order under one deadline, recording every
// attempt. Thread-safe: per-request state lives on the stack of send().
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "clock.h"
#include "email_provider.h"
#include "failover_policy.h"

namespace mailrelay {

struct RelaySettings {
  std::chrono::milliseconds attempt_timeout{3000};
  std::chrono::milliseconds deadline{10000};
  FailoverPolicy policy;
};

struct Attempt {
  std::string provider;
  int try_number = 1;
  AttemptResult result;
  double latency_ms = 0;
};

struct RelayResult {
  StopReason reason = StopReason::kAllProvidersFailed;
  std::vector<Attempt> attempts;
  const Attempt* accepted() const;  // the attempt that was sent, or nullptr
  int retries() const { return attempts.empty() ? 0 : static_cast<int>(attempts.size()) - 1; }
};

class Relay {
 public:
  // Jitter returns a uniform value in [0, 1); the default draws from a per-thread engine.
  using Jitter = std::function<double()>;
  // REQUIRES: providers non-empty; they outlive the Relay.
  Relay(std::vector<EmailProvider*> providers, RelaySettings settings, Clock& clock, Jitter jitter = {});

  // `started` is when the request arrived: the deadline counts from there.
  RelayResult send(const Email& email, const std::string& request_id, Clock::TimePoint started);

  const RelaySettings& settings() const { return settings_; }

 private:
  std::vector<EmailProvider*> providers_;
  RelaySettings settings_;
  Clock& clock_;
  Jitter jitter_;
};

}  // namespace mailrelay
