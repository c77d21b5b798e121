#include "send_service.h"

#include <algorithm>

#include "audit_log.h"  // redact_addresses
#include "hash.h"

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;  // answers keep the documented key order

// Idempotency keys: 1 to 255 printable ASCII characters (they are echoed nowhere, but kept).
bool is_acceptable_idempotency_key(const std::string& key) {
  return !key.empty() && key.size() <= 255 &&
         std::all_of(key.begin(), key.end(), [](char c) { return c >= 33 && c <= 126; });
}


SendReport refusal(SendReport report, int status, const std::string& id, const std::string& code,
                   const std::string& message, const std::string& field = "") {
  report.status = status;
  report.outcome = code;
  report.body = error_json(id, code, message, field);
  return report;
}

}  // namespace

bool is_json_content_type(const std::string& value) {
  std::string v;
  for (char c : value) v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  constexpr std::string_view kType = "application/json";
  if (v.compare(0, kType.size(), kType) != 0) return false;
  return v.size() == kType.size() || v[kType.size()] == ';' || v[kType.size()] == ' ';
}

SendService::SendService(StateStore& store, ProviderControl* control, Suppressions* suppressions, Metrics& metrics,
                         std::size_t max_in_flight)
    : store_(store), control_(control), suppressions_(suppressions), metrics_(metrics), max_in_flight_(max_in_flight) {}

std::vector<std::string> SendService::in_flight_ids() const {
  std::lock_guard<std::mutex> lock(ids_mutex_);
  return {ids_.begin(), ids_.end()};
}

SendReport SendService::handle(const Runtime& runtime, SendRequest request) {
  const std::string& id = request.request_id;
  SendReport report;
  const Authorization caller = authorize(runtime.tokens.get(), request.authorization, kScopeSend);
  report.client = caller.client;
  if (caller.status == 401) report.headers.emplace_back("WWW-Authenticate", "Bearer");
  if (caller.status != 0) return refusal(std::move(report), caller.status, id, caller.code, caller.message);
  if (!is_json_content_type(request.content_type)) {
    return refusal(std::move(report), 415, id, "unsupported_media_type", "Content-Type must be application/json");
  }
  // Client rate limits (README "Other endpoints"): per client name, "*" for the others; they fail open
  // when the store is unreachable (the audit line says so).
  if (!runtime.client_rates.empty()) {
    const std::string name = report.client.value_or("");
    auto rate = runtime.client_rates.find(name);
    if (rate == runtime.client_rates.end()) rate = runtime.client_rates.find("*");
    if (rate != runtime.client_rates.end()) {
      // A loopback caller without a token: a bucket no client name can collide with.
      auto verdict = store_.take(name.empty() ? "(loopback)" : name, rate->second);
      if (!verdict) {
        report.store_unavailable = true;
      } else if (!verdict.value().allowed) {
        metrics_.refused("rate_limit");
        report.refused_by = "rate_limit";
        const auto wait = verdict.value().retry_after.count();
        report.headers.emplace_back("Retry-After", std::to_string(std::max<long long>(1, (wait + 999) / 1000)));
        return refusal(std::move(report), 429, id, "rate_limited",
                       "client " + (name.empty() ? std::string("(loopback)") : name) +
                           " is over its rate limit; retry after Retry-After seconds");
      }
    }
  }
  // Admission (README "Operating"): beyond --max-in-flight a send is answered at once; it is counted.
  if (in_flight_.fetch_add(1) >= max_in_flight_) {
    --in_flight_;
    metrics_.refused("max_in_flight");
    report.refused_by = "max_in_flight";
    report.headers.emplace_back("Retry-After", "1");
    return refusal(std::move(report), 503, id, "overloaded", "too many sends in progress; retry in a moment");
  }
  {
    std::lock_guard<std::mutex> lock(ids_mutex_);
    ids_.insert(id);
  }
  metrics_.begin_send();
  // Released however the send ends (an exception goes on to the HTTP layer's last-resort handler).
  struct Release {
    SendService& service;
    const std::string& id;
    ~Release() {
      service.metrics_.end_send();
      --service.in_flight_;
      std::lock_guard<std::mutex> lock(service.ids_mutex_);
      service.ids_.erase(service.ids_.find(id));
    }
  } release{*this, id};
  std::optional<std::string> client = report.client;
  const bool store_unavailable = report.store_unavailable;
  report = admitted(runtime, request, client.value_or(""));
  report.client = client;
  report.store_unavailable = report.store_unavailable || store_unavailable;
  return report;
}

SendReport SendService::admitted(const Runtime& runtime, SendRequest& request, const std::string& client) {
  const std::string& id = request.request_id;
  SendReport report;
  // Idempotency-Key (README "POST /v1/send"), scoped to the client. The guard forgets the key if this
  // ends without storing an answer (an exception): a stuck "in flight" would block it.
  const bool keyed = request.idempotency_key.has_value();
  const std::string key = request.idempotency_key.value_or("");
  if (keyed && !is_acceptable_idempotency_key(key)) {
    return refusal(std::move(report), 400, id, "invalid_request", "must be 1 to 255 printable ASCII characters",
                   "Idempotency-Key");
  }
  const std::string digest = keyed ? sha256_hex(request.body) : "";
  auto email = parse_email(request.body, runtime.limits);
  std::string().swap(request.body);  // the raw body is not needed past here (memory per request)
  if (!email) {
    const Error& e = email.error();
    return refusal(std::move(report), 400, id, e.code, e.message, e.field);
  }
  report.email = std::move(email).value();
  // Suppressed recipients (README "Delivery events and suppressions") get no provider call. The check fails open: with the
  // store unreachable the send goes out, and the audit line says the store was unavailable.
  if (suppressions_) {
    auto suppressed = suppressions_->first_suppressed(*report.email);
    if (!suppressed) {
      report.store_unavailable = true;
    } else if (suppressed.value()) {
      const SuppressedRecipient& r = *suppressed.value();
      metrics_.suppressed_send();
      return refusal(std::move(report), 422, id, "recipient_suppressed",
                     "this recipient is suppressed (" + r.why.type + (r.why.provider.empty() ? "" : " at " + r.why.provider) +
                         " since " + r.why.since + "); see GET /v1/suppressions/{address}",
                     r.field);
    }
  }
  // A claim whose holder vanished (a crash) blocks the key no longer than a request can last.
  const auto claim_ttl = runtime.relay->settings().deadline + std::chrono::seconds(60);
  if (keyed) {
    auto begun = store_.begin_idempotent(client, key, digest, claim_ttl);
    if (!begun) {
      // The caller asked for a guarantee the relay cannot give now (README "Running several instances").
      report.store_unavailable = true;
      report.headers.emplace_back("Retry-After", "1");
      return refusal(std::move(report), 503, id, "state_store_unavailable",
                     "the state store holding Idempotency-Keys is unreachable, so nothing was sent; retry in a moment");
    }
    auto lookup = std::move(begun).value();
    switch (lookup.verdict) {
      case IdempotencyCache::Verdict::kReplay:
        metrics_.idempotent_replay();
        report.headers.emplace_back("Idempotent-Replayed", "true");
        report.status = lookup.answer.status;
        report.body = std::move(lookup.answer.body);
        report.outcome = "replayed";
        report.replay_of = lookup.answer.request_id;
        return report;
      case IdempotencyCache::Verdict::kInFlight:
        return refusal(std::move(report), 409, id, "idempotency_in_flight",
                       "a request with this Idempotency-Key is still being processed; retry later");
      case IdempotencyCache::Verdict::kMismatch:
        return refusal(std::move(report), 422, id, "idempotency_mismatch",
                       "this Idempotency-Key was used with a different request body");
      case IdempotencyCache::Verdict::kProceed:
        break;
    }
  }
  struct ForgetKeyUnlessAnswered {
    StateStore* store;
    const std::string& client;
    const std::string& key;
    const std::string& digest;
    ~ForgetKeyUnlessAnswered() {
      if (store) store->release_idempotent(client, key, digest);
    }
  } forget{keyed ? &store_ : nullptr, client, key, digest};
  // The answer kept for replays holds no address: provider text is redacted as in the audit log.
  auto remember = [&](int status) {
    const bool redact = report.body.contains("attempts") &&
                        std::any_of(report.body["attempts"].begin(), report.body["attempts"].end(),
                                    [](const json& a) { return a.contains("error"); });
    if (redact) {
      json body = report.body;
      for (auto& a : body["attempts"]) {
        if (a.contains("error")) a["error"] = redact_addresses(a["error"].get<std::string>());
      }
      store_.complete_idempotent(client, key, digest, status, body, id);
    } else {
      store_.complete_idempotent(client, key, digest, status, report.body, id);
    }
    forget.store = nullptr;
  };

  const std::shared_ptr<const ProviderOverrides> overrides =
      control_ ? control_->current() : std::shared_ptr<const ProviderOverrides>();
  report.relay = runtime.relay->send(*report.email, id, request.started, overrides.get());
  const RelayResult& result = *report.relay;
  json attempts = attempts_to_json(result);
  if (const Attempt* sent = result.accepted()) {
    report.outcome = "sent";
    report.body = json{{"request_id", id},
                       {"status", "sent"},
                       {"provider", sent->provider},
                       {"provider_message_id",
                        sent->result.message_id.empty() ? json(nullptr) : json(sent->result.message_id)},
                       {"attempts", std::move(attempts)}};
    if (report.email->sandbox) report.body["sandbox"] = true;
    if (keyed) remember(200);
    return report;
  }
  switch (result.reason) {
    case StopReason::kDeadline:
      report = refusal(std::move(report), 504, id, "deadline_exceeded",
                       "no provider accepted the message within the request deadline");
      break;
    case StopReason::kNoProviderAvailable: {
      auto wait = std::chrono::milliseconds::max();
      for (const auto& name : runtime.provider_names) {
        if (runtime.health) wait = std::min(wait, runtime.health->wait(name));
      }
      report.headers.emplace_back("Retry-After", std::to_string(std::max<long long>(1, (wait.count() + 999) / 1000)));
      report = refusal(std::move(report), 503, id, "no_provider_available",
                       "every provider is skipped (switched off by an operator, circuit open or parked); see attempts");
      break;
    }
    case StopReason::kAuditUnavailable:
      report.headers.emplace_back("Retry-After", "1");
      report = refusal(std::move(report), 503, id, "audit_unavailable",
                       "the audit log cannot be written, so nothing was sent; retry in a moment");
      break;
    case StopReason::kAmbiguousTimeout:
      report = refusal(std::move(report), 504, id, "deadline_exceeded",
                       "provider " + result.attempts.back().provider +
                           " may have accepted the message (no answer in time, or a 502/504 from its gateway); "
                           "not failing over (--failover-on-timeout=false)");
      break;
    default:
      report = refusal(std::move(report), 502, id, "all_providers_failed", "every provider refused or failed; see attempts");
      break;
  }
  report.body["attempts"] = std::move(attempts);
  if (report.email->sandbox) report.body["sandbox"] = true;
  // Remembered only when a provider may have the message; when surely nothing went out, the key
  // is forgotten so that a retry with it can still send.
  bool may_have_been_sent = std::any_of(result.attempts.begin(), result.attempts.end(),
                                        [](const Attempt& a) { return a.result.may_have_been_sent; });
  if (keyed && may_have_been_sent) remember(report.status);
  return report;
}

}  // namespace mailrelay
