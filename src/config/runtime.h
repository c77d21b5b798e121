// Runtime: what SIGHUP may replace: client tokens, providers and the relay over them, rate limits,
// webhook keys. Immutable
// once built. Requests hold it through a shared_ptr, so a reload never changes a request midway:
// in-flight requests finish on the runtime they started with.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "clock.h"
#include "config.h"
#include "email_provider.h"
#include "http_transport.h"
#include "message_limits.h"
#include "relay.h"
#include "result.h"
#include "token_store.h"

namespace mailrelay {

// Where each provider's webhook is verified and where verified batches go (reloadable).
struct EventEndpoints {
  std::map<std::string, std::string> webhook_secrets;  // by provider; without one its endpoint is 404
  std::string forward_url;                             // "" = not forwarded
  std::string forward_key;                             // HMAC key of X-Mailrelay-Signature
};

struct Runtime {
  std::unique_ptr<TokenStore> tokens;  // null: no --tokens-file
  std::vector<std::unique_ptr<EmailProvider>> providers;
  std::unique_ptr<Relay> relay;
  std::vector<std::string> provider_names;  // in order
  MessageLimits limits = MessageLimits::relay();  // the providers' together (GET /v1/limits)
  ProviderHealth* health = nullptr;          // shared across reloads; may be null
  std::map<std::string, RateLimit> client_rates;  // --rate-limits: by client name, "*" for the others
  EventEndpoints events;                          // webhook keys and --events-forward-url
};

// Builds the runtime `config` describes. Fails (with a message for the operator) when the tokens
// file cannot be loaded or the outbox directory cannot be created.
Result<std::shared_ptr<const Runtime>> build_runtime(const Config& config, HttpTransport& transport,
                                                     Clock& clock, ProviderHealth* health, RetryBudget* budget,
                                                     std::vector<AttemptObserver*> observers);

// Options that only take effect on restart and differ between `before` and `after`, by name.
std::vector<std::string> restart_only_changes(const Config& before, const Config& after);

}  // namespace mailrelay
