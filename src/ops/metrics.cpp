#include "metrics.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include "text_helpers.h"

namespace mailrelay {

void Histogram::observe(double seconds) {
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) ++buckets_[i];
  }
  ++count_;
  sum_micros_ += static_cast<std::uint64_t>(seconds * 1e6);
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  std::string sep = labels.empty() ? "" : ",";
  char bound[32];
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    std::snprintf(bound, sizeof bound, "%g", kBounds[i]);
    out += name + "_bucket{" + labels + sep + "le=\"" + bound + "\"} " + std::to_string(buckets_[i].load()) + "\n";
  }
  out += name + "_bucket{" + labels + sep + "le=\"+Inf\"} " + std::to_string(count_.load()) + "\n";
  char sum[32];
  std::snprintf(sum, sizeof sum, "%.6f", static_cast<double>(sum_micros_.load()) / 1e6);
  std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + sum + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_.load()) + "\n";
}

void Metrics::after_attempt(const std::string& /*request_id*/, const Attempt& attempt) {
  std::lock_guard<std::mutex> lock(mutex_);
  ProviderStats& stats = providers_[attempt.provider];
  ++stats.outcomes[std::string(to_string(attempt.result.outcome))];
  if (attempt.result.outcome != AttemptOutcome::kSkipped) stats.latency.observe(attempt.latency_ms / 1000);
  if (attempt.result.outcome != AttemptOutcome::kSent && !attempt.result.error.empty()) {
    stats.last_error = redact_addresses(attempt.result.error);
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    stats.last_error_at = buf;
  }
}

void Metrics::refused(const std::string& limit) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++refused_[limit];
}

void Metrics::delivery_event(const std::string& provider, const std::string& type) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++delivery_events_[{provider, type}];
}

void Metrics::webhook(const std::string& provider, const std::string& outcome) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++webhooks_[{provider, outcome}];
}

void Metrics::request(const std::string& route, int status, double seconds, const RelayResult* relay) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
  // The latency objective is about sends that asked a provider: refusals before any call (400,
  // 401, 429, 503 overloaded, replays, every provider skipped) take microseconds and would dilute it.
  const bool called = relay && std::any_of(relay->attempts.begin(), relay->attempts.end(), [](const Attempt& a) {
                        return a.result.outcome != AttemptOutcome::kSkipped;
                      });
  if (route == "/v1/send" && called) send_duration_.observe(seconds);
  if (relay) {
    std::set<std::string> asked;
    for (const auto& a : relay->attempts) asked.insert(a.provider);
    if (asked.size() > 1) ++failovers_;
  }
}

namespace {

void add_metric(std::string& out, const char* name, const char* type, const char* help, std::uint64_t value) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
         std::to_string(value) + "\n";
}

}  // namespace

std::string Metrics::render(const MetricsSnapshot& now) const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    render_traffic(out);
    add_metric(out, "mailrelay_in_flight", "gauge", "Sends being handled now.", now.in_flight);
    add_metric(out, "mailrelay_queue_depth", "gauge", "Fibers ready to run, waiting for their event loop.", now.door.queue_depth);
    add_metric(out, "mailrelay_event_threads", "gauge", "Event-loop threads.", now.door.event_threads);
    add_metric(out, "mailrelay_connections", "gauge", "Open client connections.", now.door.connections);
    add_metric(out, "mailrelay_body_bytes_in_flight", "gauge", "Request bodies held in memory.", now.door.body_bytes);
    add_metric(out, "mailrelay_connections_evicted_total", "counter",
               "Connections without a whole request closed at --max-connections to admit new ones.", now.door.evicted);
    add_metric(out, "mailrelay_connections_refused_total", "counter",
               "Connections refused with 503: over --max-connections-per-ip, or no room in the table.", now.door.refused);
    render_refusals_and_events(out);
  }
  render_gauges(out, now);
  return out;
}

void Metrics::render_traffic(std::string& out) const {
  out += "# HELP mailrelay_requests_total HTTP requests answered, by route and status.\n"
         "# TYPE mailrelay_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    out += "mailrelay_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  }
  out += "# HELP mailrelay_attempts_total Provider attempts, by provider and outcome.\n"
         "# TYPE mailrelay_attempts_total counter\n";
  for (const auto& [provider, stats] : providers_) {
    for (const auto& [outcome, n] : stats.outcomes) {
      out += "mailrelay_attempts_total{provider=\"" + provider + "\",outcome=\"" + outcome + "\"} " + std::to_string(n) + "\n";
    }
  }
  add_metric(out, "mailrelay_failovers_total", "counter", "Sends that asked more than one provider.", failovers_);
  add_metric(out, "mailrelay_idempotency_replays_total", "counter", "Answers replayed for a repeated Idempotency-Key.",
             replays_.load());
  out += "# HELP mailrelay_provider_latency_seconds Duration of provider attempts.\n"
         "# TYPE mailrelay_provider_latency_seconds histogram\n";
  for (const auto& [provider, stats] : providers_) {
    stats.latency.write(out, "mailrelay_provider_latency_seconds", "provider=\"" + provider + "\"");
  }
  out += "# HELP mailrelay_send_duration_seconds Duration of POST /v1/send that called a provider, end to end.\n"
         "# TYPE mailrelay_send_duration_seconds histogram\n";
  send_duration_.write(out, "mailrelay_send_duration_seconds", "");
}

void Metrics::render_refusals_and_events(std::string& out) const {
  out += "# HELP mailrelay_refused_total Requests refused by a limit, by limit.\n# TYPE mailrelay_refused_total counter\n";
  for (const char* limit : {"max_in_flight", "body_budget", "rate_limit"}) {
    auto it = refused_.find(limit);
    out += std::string("mailrelay_refused_total{limit=\"") + limit + "\"} " +
           std::to_string(it == refused_.end() ? 0 : it->second) + "\n";
  }
  // A counter by provider and one more label.
  auto by_provider = [&out](const std::string& name, const std::string& help, const std::string& label,
                            const std::map<std::pair<std::string, std::string>, std::uint64_t>& counts) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (const auto& [key, n] : counts) {
      out += name + "{provider=\"" + key.first + "\"," + label + "=\"" + key.second + "\"} " + std::to_string(n) + "\n";
    }
  };
  by_provider("mailrelay_delivery_events_total", "Verified delivery events, by provider and type.", "type",
              delivery_events_);
  by_provider("mailrelay_webhook_requests_total", "Provider webhook requests, by provider and outcome.", "outcome",
              webhooks_);
  add_metric(out, "mailrelay_suppressed_sends_total", "counter", "Sends refused because a recipient is suppressed.",
             suppressed_sends_.load());
  out += "# HELP mailrelay_build_info Build information.\n# TYPE mailrelay_build_info gauge\n"
         "mailrelay_build_info{version=\"" + version_ + "\"} 1\n";
}

// What the other parts counted: circuits, the audit log, the state store, the admission limit.
void Metrics::render_gauges(std::string& out, const MetricsSnapshot& now) {
  if (!now.circuits.empty()) {
    out += "# HELP mailrelay_provider_circuit Circuit state by provider: 1 for the current state.\n"
           "# TYPE mailrelay_provider_circuit gauge\n";
    for (const auto& [name, current] : now.circuits) {
      for (auto state : {CircuitState::kClosed, CircuitState::kOpen, CircuitState::kHalfOpen, CircuitState::kParked}) {
        out += "mailrelay_provider_circuit{provider=\"" + name + "\",state=\"" + std::string(to_string(state)) +
               "\"} " + (state == current ? "1" : "0") + "\n";
      }
    }
  }
  add_metric(out, "mailrelay_audit_write_errors_total", "counter",
             "Audit lines not written to the file (each went to the operational log).", now.audit.write_errors);
  add_metric(out, "mailrelay_audit_rotation_failures_total", "counter",
             "Audit log rotations that failed (retried with backoff).", now.audit.rotation_failures);
  add_metric(out, "mailrelay_audit_reopen_failures_total", "counter", "Audit log reopens that failed (retried with backoff).",
             now.audit.reopen_failures);
  add_metric(out, "mailrelay_max_in_flight", "gauge", "Sends handled at once at most (--max-in-flight); beyond, 503 overloaded.",
             now.max_in_flight);
  add_metric(out, "mailrelay_state_store_up", "gauge", "Whether the last state store operation succeeded (1) or not (0).",
             now.store.up ? 1 : 0);
  add_metric(out, "mailrelay_state_store_errors_total", "counter",
             "State store operations that failed (unreachable, timed out, refused).", now.store.errors);
  add_metric(out, "mailrelay_audit_stream_dropped_total", "counter",
             "Audit lines not appended to the Redis stream (the file has them).", now.store.stream_dropped);
}

nlohmann::ordered_json Metrics::provider_json(const std::string& provider) const {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::ordered_json counters{{"sent", 0}, {"rejected", 0}, {"error", 0}, {"timeout", 0}, {"skipped", 0}};
  nlohmann::ordered_json last_error = nullptr;
  auto it = providers_.find(provider);
  if (it != providers_.end()) {
    for (const auto& [outcome, n] : it->second.outcomes) counters[outcome] = n;
    if (!it->second.last_error.empty()) {
      last_error = {{"at", it->second.last_error_at}, {"message", it->second.last_error}};
    }
  }
  return {{"counters", counters}, {"last_error", last_error}};
}

}  // namespace mailrelay
