// The provider registry: one descriptor per provider (its name, options, secrets and factory),
// exported by the provider's own file and listed once in provider_registry.cpp. Config, runtime
// and --help loop over it. Immutable; thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clock.h"
#include "delivery_events.h"
#include "email_provider.h"
#include "http_transport.h"
#include "result.h"

namespace mailrelay {

// One option, given as --<provider>-<key> (and MAILRELAY_<PROVIDER>_<KEY>, and in --config).
// An option whose key ends in "base-url" is checked as a provider URL (https, or http to loopback).
struct ProviderOption {
  std::string key;
  std::string default_value;
  std::string help;
};

// One secret: --<provider>-<key>-file, else the environment variable `env`, else the systemd
// credential `credential`. A secret that is not `required` may be missing.
struct ProviderSecret {
  std::string key;    // "api-key"
  std::string label;  // "API key", for messages
  std::string env;  // "SENDGRID_API_KEY"
  std::string credential;  // "sendgrid_api_key"
  bool required = true;
};

// One provider's settings as loaded: option values by key, secrets by key (never logged).
struct ProviderConfig {
  std::string name;
  std::map<std::string, std::string> options;
  std::map<std::string, std::string> secrets;
  const std::string& option(const std::string& key) const { return find(options, key); }  // "" when unset
  const std::string& secret(const std::string& key) const { return find(secrets, key); }  // "" when missing

 private:
  static const std::string& find(const std::map<std::string, std::string>& in, const std::string& key) {
    static const std::string kNone;
    auto it = in.find(key);
    return it == in.end() ? kNone : it->second;
  }
};

// A provider's webhook (README "Delivery events and suppressions"): POST /v1/events/<provider>,
// answered 404 until its secret is given. EventService runs verify, then (when the provider
// signs a time) the replay window, then parse; both are pure.
struct ProviderWebhook {
  // --<provider>-<key>-file, else env, else credential; required is false (the endpoint is off).
  ProviderSecret secret;
  std::string help;                  // what the secret is, for --help
  std::vector<std::string> headers;  // the request headers verify and parse read
  bool signed_timestamp = true;      // false: the provider signs no time (no replay window on it)
  std::string challenge;             // WWW-Authenticate on a refused request; "" for none
  // Why the secret cannot be used (the whole message), or nullopt.
  std::optional<std::string> (*check)(const std::string& secret) = nullptr;
  // The signed timestamp as sent ("" when it signs none), or why the request is not the
  // provider's (answered 401 invalid_signature with the error's message).
  Result<std::string> (*verify)(const std::string& secret, const WebhookRequest& request) = nullptr;
  // A verified body in our vocabulary; an Error is answered 400 invalid_request.
  Result<WebhookBatch> (*parse)(const WebhookRequest& request, std::int64_t signed_at) = nullptr;
};

struct ProviderDescriptor {
  std::string name;
  std::vector<ProviderOption> options;
  std::vector<ProviderSecret> secrets;
  // What the options must satisfy beyond URLs (a domain set, a directory given): nullopt when fine.
  std::optional<std::string> (*check)(const ProviderConfig& config) = nullptr;
  // Builds the provider; an Error for what only shows when building (a directory not writable).
  Result<std::unique_ptr<EmailProvider>> (*make)(const ProviderConfig& config, HttpTransport& transport,
                                                 Clock& clock) = nullptr;
  std::optional<ProviderWebhook> webhook;  // nullopt: the provider sends no events
};

// Every provider, in the order --help lists them.
const std::vector<const ProviderDescriptor*>& provider_registry();
const ProviderDescriptor* find_provider(std::string_view name);
// "sendgrid, mailgun, ..." for messages.
std::string provider_names();


}  // namespace mailrelay
