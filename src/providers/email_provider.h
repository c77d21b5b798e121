// EmailProvider: one way to hand a message over (SendGrid, Mailgun, the outbox directory).
// Implementations are thread-safe: one instance serves every event loop.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "email.h"
#include "message_limits.h"

namespace mailrelay {

enum class AttemptOutcome {
  kSent,      // the provider accepted the message
  kRejected,  // the provider refused this message (4xx other than 401/403/408/429): do not retry
  kError,     // 5xx, 401/403, 429, network: may succeed later or elsewhere
  kTimeout,   // no complete answer within the attempt timeout
  kSkipped,   // not tried (circuit open, provider parked)
};

std::string_view to_string(AttemptOutcome outcome);

struct AttemptResult {
  AttemptOutcome outcome = AttemptOutcome::kError;
  int http_status = 0;             // 0 when no HTTP response arrived
  std::string message_id;          // provider's id when sent, may be empty
  std::string error;               // short reason when not sent; never holds secrets
  bool may_have_been_sent = false; // true when the provider may have accepted it despite the failure
  // How long the provider asked us to stay away: Retry-After, or its own throttling signal.
  std::optional<std::chrono::milliseconds> retry_after;
  bool throttled = false;  // the provider asked us to slow down (a 429, or its own throttling error)
};

class EmailProvider {
 public:
  virtual ~EmailProvider() = default;
  virtual const std::string& name() const = 0;
  // One attempt, bounded by `timeout` from start to finish. Never throws for provider trouble.
  // The request id travels with the message where the provider hands it back in its events.
  virtual AttemptResult send(const Email& email, std::string_view request_id,
                             std::chrono::milliseconds timeout) = 0;
  // What a message must stay within for this provider to take it whole (README "Providers").
  virtual MessageLimits limits() const { return {}; }
  // True when the provider has a test mode for "sandbox": true messages (README "Providers").
  virtual bool supports_sandbox() const { return false; }
};

}  // namespace mailrelay
