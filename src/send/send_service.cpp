#include "send_service.h"

#include <algorithm>

#include "audit_log.h"  // redact_addresses
#include "hash.h"
#include "json_depth.h"
#include "message_status.h"
#include "text_helpers.h"

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


SendService::SendService(StateStore& store, ProviderControl* control, Suppressions* suppressions, Metrics& metrics,
                         std::size_t max_in_flight)
    : store_(store), control_(control), suppressions_(suppressions), metrics_(metrics), max_in_flight_(max_in_flight) {}

std::vector<std::string> SendService::in_flight_ids() const {
  std::lock_guard<std::mutex> lock(ids_mutex_);
  return {ids_.begin(), ids_.end()};
}

SendReport SendService::handle(const Runtime& runtime, SendRequest request) {
  const std::string& id = request.request_id;
  request.received_at = utc_text(std::chrono::system_clock::now());
  SendReport report;
  report.client = request.client;
  if (!is_json_content_type(request.content_type)) {
    return refusal(std::move(report), 415, id, "unsupported_media_type", "Content-Type must be application/json");
  }
  if (refused_by_rate_limit(runtime, id, report) || !admit(id, report)) return report;
  // Released however the send ends (an exception goes on to the HTTP layer's last-resort handler).
  struct Release {
    SendService& service;
    const std::string& id;
    ~Release() {
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

BatchReport SendService::handle_batch(const Runtime& runtime, SendRequest request, std::size_t max_batch) {
  const std::string& id = request.request_id;
  BatchReport report;
  report.outcome = "batch";
  auto refuse = [&](SendReport refused) {
    report.status = refused.status;
    report.outcome = refused.outcome;
    report.body = std::move(refused.body);
    report.headers = std::move(refused.headers);
    return std::move(report);
  };
  report.client = request.client;
  if (!is_json_content_type(request.content_type)) {
    return refuse(refusal({}, 415, id, "unsupported_media_type", "Content-Type must be application/json"));
  }
  // A message nests kMaxJsonDepth deep at most, inside {"messages": [...]}.
  nlohmann::json doc = json_nesting_depth(request.body, kMaxJsonDepth + 2) > kMaxJsonDepth + 2
                           ? nlohmann::json()
                           : nlohmann::json::parse(request.body, nullptr, false);
  std::string().swap(request.body);
  if (!doc.is_object() || doc.size() != 1 || !doc.contains("messages") || !doc["messages"].is_array() ||
      doc["messages"].empty() || doc["messages"].size() > max_batch) {
    return refuse(refusal({}, 400, id, "invalid_request",
                          "the body must be {\"messages\": [...]} with 1 to " + std::to_string(max_batch) +
                              " messages, JSON nested at most " + std::to_string(kMaxJsonDepth + 2) + " deep",
                          "messages"));
  }
  std::vector<SendRequest> items = batch_items(request, doc["messages"], report);
  std::vector<std::function<void()>> jobs;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!report.items[i].outcome.empty()) continue;  // refused while splitting
    // What stands if the send ends in an exception (the single send's last-resort answer).
    report.items[i] = refusal({}, 500, items[i].request_id, "internal_error", "internal error");
    report.items[i].client = report.client;
    jobs.push_back([this, &runtime, &items, &report, i] { report.items[i] = handle(runtime, std::move(items[i])); });
  }
  run_all(jobs);
  json results = json::array();
  std::size_t sent = 0;
  for (SendReport& item : report.items) {
    sent += item.status == 200 ? 1 : 0;
    json result = item.body;  // the item keeps its own: its audit line points into it
    result["http_status"] = item.status;
    results.push_back(std::move(result));
  }
  report.status = sent == report.items.size() ? 200 : 207;
  report.body = json{{"request_id", id},
                     {"summary", {{"total", report.items.size()}, {"sent", sent}, {"failed", report.items.size() - sent}}},
                     {"results", std::move(results)}};
  return report;
}

// Each message of a batch as a send of its own; a message that is not one (not an object, a bad
// idempotency_key) gets its refusal in `report` now.
std::vector<SendRequest> SendService::batch_items(const SendRequest& batch, nlohmann::json& messages,
                                                  BatchReport& report) {
  std::vector<SendRequest> items(messages.size());
  report.items.resize(messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    SendRequest& item = items[i];
    item.request_id = batch.request_id + "." + std::to_string(i);
    item.started = batch.started;
    item.client = batch.client;
    item.content_type = batch.content_type;
    report.ids.push_back(item.request_id);
    report.items[i].client = report.client;
    nlohmann::json& message = messages[i];
    if (!message.is_object()) {
      report.items[i] = refusal({}, 400, item.request_id, "invalid_request", "each message must be a JSON object");
      continue;
    }
    if (message.contains("idempotency_key")) {
      if (!message["idempotency_key"].is_string() || !is_acceptable_idempotency_key(message["idempotency_key"].get_ref<const std::string&>())) {
        report.items[i] = refusal({}, 400, item.request_id, "invalid_request", "must be 1 to 255 printable ASCII characters",
                                  "idempotency_key");
        continue;
      }
      item.idempotency_key = message["idempotency_key"].get<std::string>();
      message.erase("idempotency_key");
    }
    item.body = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return items;
}

// Client rate limits (README "Other endpoints"): per client name, "*" for the others; they fail
// open when the store is unreachable (the audit line says so).
bool SendService::refused_by_rate_limit(const Runtime& runtime, const std::string& id, SendReport& report) {
  if (runtime.client_rates.empty()) return false;
  const std::string name = report.client.value_or("");
  auto rate = runtime.client_rates.find(name);
  if (rate == runtime.client_rates.end()) rate = runtime.client_rates.find("*");
  if (rate == runtime.client_rates.end()) return false;
  // A loopback caller without a token: a bucket no client name can collide with.
  auto verdict = store_.take(name.empty() ? "(loopback)" : name, rate->second);
  if (!verdict) {
    report.store_unavailable = true;
    return false;
  }
  if (verdict.value().allowed) return false;
  metrics_.refused("rate_limit");
  report.refused_by = "rate_limit";
  const auto wait = verdict.value().retry_after.count();
  report.headers.emplace_back("Retry-After", std::to_string(std::max<long long>(1, (wait + 999) / 1000)));
  report = refusal(std::move(report), 429, id, "rate_limited",
                   "client " + (name.empty() ? std::string("(loopback)") : name) +
                       " is over its rate limit; retry after Retry-After seconds");
  return true;
}

// Admission (README "Operating"): beyond --max-in-flight a send is answered at once; it is counted.
bool SendService::admit(const std::string& id, SendReport& report) {
  std::size_t now = in_flight_.load();
  do {
    if (now >= max_in_flight_) {
      metrics_.refused("max_in_flight");
      report.refused_by = "max_in_flight";
      report.headers.emplace_back("Retry-After", "1");
      report = refusal(std::move(report), 503, id, "overloaded", "too many sends in progress; retry in a moment");
      return false;
    }
  } while (!in_flight_.compare_exchange_weak(now, now + 1));
  std::lock_guard<std::mutex> lock(ids_mutex_);
  ids_.insert(id);
  return true;
}

SendReport SendService::admitted(const Runtime& runtime, SendRequest& request, const std::string& client) {
  const std::string& id = request.request_id;
  SendReport report;
  // Idempotency-Key (README "POST /v1/send"), scoped to the client.
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
  report.email->client = client;  // stamped beside the request id (SPEC §21)
  if (refused_as_suppressed(id, report)) return report;
  // A claim whose holder vanished (a crash) blocks the key no longer than a request can last.
  const auto claim_ttl = runtime.relay->settings().deadline + std::chrono::seconds(60);
  if (keyed && !claimed(IdempotencyClaim{client, key, digest}, claim_ttl, id, report)) return report;
  // The guard forgets the key if this ends without storing an answer (an exception): a stuck
  // "in flight" would block it.
  struct ForgetKeyUnlessAnswered {
    StateStore* store;
    const IdempotencyClaim claim;
    ~ForgetKeyUnlessAnswered() {
      if (store) store->release_idempotent(claim.client, claim.key, claim.digest);
    }
  } forget{keyed ? &store_ : nullptr, IdempotencyClaim{client, key, digest}};
  relay(runtime, request, report);
  report.client = client.empty() && !runtime.tokens ? std::nullopt : std::optional<std::string>(client);
  store_.record_message(client, id, message_outcome(id, report, request.received_at, utc_text(std::chrono::system_clock::now())));
  // Remembered only when a provider may have the message; when surely nothing went out, the key
  // is forgotten so that a retry with it can still send.
  const auto& attempts = report.relay->attempts;
  const bool may_have_been_sent = report.status == 200 ||
                                  std::any_of(attempts.begin(), attempts.end(),
                                              [](const Attempt& a) { return a.result.may_have_been_sent; });
  if (keyed && may_have_been_sent) {
    remember(forget.claim, id, report);
    forget.store = nullptr;
  }
  return report;
}

// Suppressed recipients (README "Delivery events and suppressions") get no provider call. The
// check fails open: with the store unreachable the send goes out, and the audit line says the
// store was unavailable.
bool SendService::refused_as_suppressed(const std::string& id, SendReport& report) {
  if (!suppressions_) return false;
  auto suppressed = suppressions_->first_suppressed(*report.email);
  if (!suppressed) {
    report.store_unavailable = true;
    return false;
  }
  if (!suppressed.value()) return false;
  const SuppressedRecipient& r = *suppressed.value();
  metrics_.suppressed_send();
  report = refusal(std::move(report), 422, id, "recipient_suppressed",
                   "this recipient is suppressed (" + r.why.type + (r.why.provider.empty() ? "" : " at " + r.why.provider) +
                       " since " + r.why.since + "); see GET /v1/suppressions/{address}",
                   r.field);
  return true;
}

// Claims the key for this request; false (and the report is the answer) for a replay, a request
// still in flight, another body under the key, or a store that cannot say.
bool SendService::claimed(const IdempotencyClaim& claim, std::chrono::milliseconds ttl, const std::string& id,
                          SendReport& report) {
  auto begun = store_.begin_idempotent(claim.client, claim.key, claim.digest, ttl);
  if (!begun) {
    // The caller asked for a guarantee the relay cannot give now (README "Running several instances").
    report.store_unavailable = true;
    report.headers.emplace_back("Retry-After", "1");
    report = refusal(std::move(report), 503, id, "state_store_unavailable",
                     "the state store holding Idempotency-Keys is unreachable, so nothing was sent; retry in a moment");
    return false;
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
      return false;
    case IdempotencyCache::Verdict::kInFlight:
      report = refusal(std::move(report), 409, id, "idempotency_in_flight",
                       "a request with this Idempotency-Key is still being processed; retry later");
      return false;
    case IdempotencyCache::Verdict::kMismatch:
      report = refusal(std::move(report), 422, id, "idempotency_mismatch",
                       "this Idempotency-Key was used with a different request body");
      return false;
    case IdempotencyCache::Verdict::kProceed:
      break;
  }
  return true;
}

// The answer kept for replays holds no address: provider text is redacted as in the audit log.
void SendService::remember(const IdempotencyClaim& claim, const std::string& id, const SendReport& report) {
  json body = report.body;
  if (body.contains("attempts")) body["attempts"] = redacted_attempts(std::move(body["attempts"]));
  store_.complete_idempotent(claim.client, claim.key, claim.digest, report.status, body, id);
}

// Sends through the relay; the report is the answer: sent, or why not (with every attempt).
void SendService::relay(const Runtime& runtime, const SendRequest& request, SendReport& report) {
  const std::string& id = request.request_id;
  const std::shared_ptr<const ProviderOverrides> overrides =
      control_ ? control_->current() : std::shared_ptr<const ProviderOverrides>();
  report.relay = runtime.relay->send(*report.email, id, request.started, overrides.get());
  const RelayResult& result = *report.relay;
  json attempts = attempts_to_json(result);
  if (const Attempt* sent = result.accepted()) {
    report.outcome = "sent";
    report.status = 200;
    report.body = json{{"request_id", id},
                       {"status", "sent"},
                       {"provider", sent->provider},
                       {"provider_message_id",
                        sent->result.message_id.empty() ? json(nullptr) : json(sent->result.message_id)},
                       {"attempts", std::move(attempts)}};
  } else {
    const Failure failure = failure_of(runtime, result);
    if (!failure.retry_after.empty()) report.headers.emplace_back("Retry-After", failure.retry_after);
    report = refusal(std::move(report), failure.status, id, failure.code, failure.message);
    report.body["attempts"] = std::move(attempts);
  }
  if (report.email->sandbox) report.body["sandbox"] = true;
}

// Why no provider took the message, as the API answers it.
SendService::Failure SendService::failure_of(const Runtime& runtime, const RelayResult& result) {
  switch (result.reason) {
    case StopReason::kDeadline:
      return {504, "deadline_exceeded", "no provider accepted the message within the request deadline", ""};
    case StopReason::kNoProviderAvailable: {
      auto wait = std::chrono::milliseconds::max();
      for (const auto& name : runtime.provider_names) {
        if (runtime.health) wait = std::min(wait, runtime.health->wait(name));
      }
      return {503, "no_provider_available",
              "every provider is skipped (switched off by an operator, circuit open or parked); see attempts",
              std::to_string(std::max<long long>(1, (wait.count() + 999) / 1000))};
    }
    case StopReason::kAuditUnavailable:
      return {503, "audit_unavailable", "the audit log cannot be written, so nothing was sent; retry in a moment", "1"};
    case StopReason::kAmbiguousTimeout:
      return {504, "deadline_exceeded",
              "provider " + result.attempts.back().provider +
                  " may have accepted the message (no answer in time, or a 502/504 from its gateway); "
                  "not failing over (--failover-on-timeout=false)",
              ""};
    default:
      return {502, "all_providers_failed", "every provider refused or failed; see attempts", ""};
  }
}

}  // namespace mailrelay
