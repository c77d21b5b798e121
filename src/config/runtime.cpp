#include "runtime.h"

#include "provider_registry.h"

namespace mailrelay {

Result<std::shared_ptr<const Runtime>> build_runtime(const Config& config, HttpTransport& transport,
                                                     Clock& clock, ProviderHealth* health, RetryBudget* budget,
                                                     std::vector<AttemptObserver*> observers) {
  auto runtime = std::make_shared<Runtime>();
  if (!config.tokens_file.empty()) {
    auto tokens = TokenStore::load(config.tokens_file);
    if (!tokens) return tokens.error();
    runtime->tokens = std::make_unique<TokenStore>(std::move(tokens).value());
  }
  std::vector<EmailProvider*> order;
  for (const auto& name : config.providers) {
    auto provider = find_provider(name)->make(config.provider_configs.at(name), transport, clock);
    if (!provider) return provider.error();
    runtime->providers.push_back(std::move(provider).value());
    order.push_back(runtime->providers.back().get());
    runtime->limits.tighten(runtime->providers.back()->limits());
  }
  RelaySettings settings;
  settings.strategy = config.strategy == "round-robin" ? Strategy::kRoundRobin
                      : config.strategy == "weighted"  ? Strategy::kWeighted
                      : config.strategy == "adaptive"  ? Strategy::kAdaptive
                                                       : Strategy::kFailover;
  settings.weights = config.provider_weights;
  settings.attempt_timeout = std::chrono::milliseconds(config.attempt_timeout_ms);
  settings.deadline = std::chrono::milliseconds(config.deadline_ms);
  settings.policy.max_retries = config.max_retries;
  settings.policy.failover_on_timeout = config.failover_on_timeout;
  runtime->relay = std::make_unique<Relay>(order, settings, clock, health, std::move(observers), Relay::Jitter{}, budget);
  runtime->provider_names = config.providers;
  runtime->client_rates = config.client_rates;
  runtime->events = {config.webhook_secrets, config.events_forward_url, config.events_forward_key};
  runtime->health = health;
  return std::shared_ptr<const Runtime>(std::move(runtime));
}

std::vector<std::string> restart_only_changes(const Config& before, const Config& after) {
  std::vector<std::string> changed;
  auto check = [&](const char* name, bool differs) {
    if (differs) changed.emplace_back(name);
  };
  check("listen", before.listen != after.listen);
  check("event-threads", before.event_threads != after.event_threads);
  check("max-in-flight", before.max_in_flight != after.max_in_flight);
  check("max-body-bytes-in-flight", before.max_body_bytes_in_flight != after.max_body_bytes_in_flight);
  check("max-connections", before.max_connections != after.max_connections);
  check("max-connections-per-ip", before.max_connections_per_ip != after.max_connections_per_ip);
  check("max-body-bytes", before.max_body_bytes != after.max_body_bytes);
  check("audit-log", before.audit_log != after.audit_log);
  check("audit-log-max-bytes", before.audit_log_max_bytes != after.audit_log_max_bytes);
  check("audit-log-max-files", before.audit_log_max_files != after.audit_log_max_files);
  check("audit-recipient-key-file", before.audit_recipient_key != after.audit_recipient_key);
  check("ca-file", before.ca_file != after.ca_file);
  check("proxy", before.proxy != after.proxy);
  check("state-store", before.state_store != after.state_store);
  check("state-store-password", before.state_store_password != after.state_store_password);
  check("state-store-prefix", before.state_store_prefix != after.state_store_prefix);
  check("max-batch", before.max_batch != after.max_batch);
  check("message-status-ttl", before.message_status_ttl_seconds != after.message_status_ttl_seconds);
  check("state-store-timeout-ms", before.state_store_timeout_ms != after.state_store_timeout_ms);
  check("audit-stream", before.audit_stream != after.audit_stream);
  check("audit-stream-max-len", before.audit_stream_max_len != after.audit_stream_max_len);
  return changed;
}

}  // namespace mailrelay
