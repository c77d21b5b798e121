#include "http_api.h"

#include <openssl/sha.h>

#include <algorithm>

#include "ascii.h"
#include "email.h"
#include "front_door.h"
#include "request_id.h"
#include "worker_pool.h"

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;  // answers keep the documented key order

constexpr const char* kJson = "application/json";
constexpr const char* kRequestIdHeader = "X-Request-Id";

// Paths we serve, with the methods each allows: anything else on them is 405, elsewhere 404.
const std::vector<std::pair<std::string, std::string>> kRoutes = {
    {"/v1/send", "POST"},
    {"/healthz", "GET"},
    {"/readyz", "GET"},
    {"/metrics", "GET"},
    {"/v1/providers", "GET"},
};

// The route label for metrics: one of ours, or "other" (unknown paths must not grow the label set).
std::string route_of(const std::string& path) {
  for (const auto& route : kRoutes) {
    if (route.first == path) return path;
  }
  return "other";
}

// When the request on this worker thread arrived. cpp-httplib runs a request from the pre-routing
// handler to the error handler on one thread and offers no per-request slot of its own, so this
// is how the error handler learns the latency of a 413 or 404.
thread_local Clock::TimePoint tl_request_started;

std::string request_id_of(const httplib::Request& req, httplib::Response& res) {
  if (res.has_header(kRequestIdHeader)) return res.get_header_value(kRequestIdHeader);
  std::string id = req.get_header_value(kRequestIdHeader);
  if (!is_acceptable_request_id(id)) id = new_request_id();
  res.set_header(kRequestIdHeader, id);
  return id;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // error_handler_t::replace: provider text is not ours to vouch for; never fail on bad UTF-8.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

json error_json(const std::string& request_id, const std::string& code, const std::string& message,
                const std::string& field = "") {
  json error{{"code", code}, {"message", message}};
  if (!field.empty()) error["field"] = field;
  return json{{"request_id", request_id}, {"error", std::move(error)}};
}

// Idempotency keys: 1 to 255 printable ASCII characters (they are echoed nowhere, but kept).
bool is_acceptable_idempotency_key(const std::string& key) {
  return !key.empty() && key.size() <= 255 &&
         std::all_of(key.begin(), key.end(), [](char c) { return c >= 33 && c <= 126; });
}

std::string sha256_hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

bool is_json_content_type(const std::string& value) {
  std::string v;
  for (char c : value) v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  constexpr std::string_view kType = "application/json";
  if (v.compare(0, kType.size(), kType) != 0) return false;
  return v.size() == kType.size() || v[kType.size()] == ';' || v[kType.size()] == ' ';
}

}  // namespace

HttpApi::HttpApi(std::shared_ptr<const Runtime> runtime, AuditLog& audit, Metrics& metrics,
                 IdempotencyCache& idempotency, ApiSettings settings, Clock& clock, spdlog::logger& log,
                 std::function<std::size_t()> queue_depth)
    : runtime_(std::move(runtime)), audit_(audit), metrics_(metrics), idempotency_(idempotency),
      queue_depth_(std::move(queue_depth)),
      settings_(settings), clock_(clock), log_(log) {}

void HttpApi::finish(const httplib::Request& req, httplib::Response& res, int status, json body,
                     RequestRecord record) {
  record.request_id = request_id_of(req, res);
  record.client_ip = req.remote_addr;  // from the socket, never from a header
  record.method = req.method;
  record.path = req.path;
  record.status = status;
  if (record.outcome.empty()) record.outcome = body.contains("error") ? body["error"]["code"].get<std::string>() : "sent";
  record.latency_ms = to_ms(clock_.now() - tl_request_started);
  // The line is in the file before the answer is written: an acknowledged request always has one.
  audit_.request(record);
  metrics_.request(route_of(req.path), status, record.latency_ms / 1000, record.relay);
  send_json(res, status, body);
}

void HttpApi::install(httplib::Server& server) {
  server.set_payload_max_length(settings_.max_body_bytes);

  // Everything that can be refused before the body is read is refused here, and the connection
  // is then closed: an unread body must never be parsed as the next request (smuggling).
  const std::string too_large_message = "request body is larger than " + std::to_string(settings_.max_body_bytes) + " bytes";
  server.set_pre_routing_handler([this, too_large_message](const httplib::Request& req, httplib::Response& res) {
    tl_request_started = clock_.now();
    std::string id = request_id_of(req, res);
    auto refuse = [&](int status, const std::string& code, const std::string& message) {
      FrontDoor::close_connection(res);
      finish(req, res, status, error_json(id, code, message), {});
      return httplib::Server::HandlerResponse::Handled;
    };
    if (FrontDoor::request_head_malformed()) return refuse(400, "invalid_request", "malformed request headers");
    const bool chunked = req.has_header("Transfer-Encoding");
    const std::size_t lengths = req.get_header_value_count("Content-Length");
    const std::string length_text = req.get_header_value("Content-Length");
    if (chunked && (req.get_header_value_count("Transfer-Encoding") != 1 ||
                    !iequals(req.get_header_value("Transfer-Encoding"), "chunked"))) {
      return refuse(400, "invalid_request", "Transfer-Encoding must be chunked, once");
    }
    if (chunked && lengths > 0) return refuse(400, "invalid_request", "Content-Length and Transfer-Encoding together");
    if (lengths > 1) return refuse(400, "invalid_request", "more than one Content-Length");
    if (lengths == 1 && (length_text.empty() || length_text.size() > 18 ||
                         !std::all_of(length_text.begin(), length_text.end(), ::isdigit))) {
      return refuse(400, "invalid_request", "Content-Length is not a number");
    }
    const std::uint64_t length = lengths == 1 ? std::stoull(length_text) : 0;
    // cpp-httplib would inflate gzip and brotli bodies without bound before any limit applies.
    if (req.has_header("Content-Encoding")) {
      return refuse(415, "unsupported_media_type", "Content-Encoding is not accepted; send the body uncompressed");
    }
    const bool is_send = req.method == "POST" && req.path == "/v1/send";
    if (!is_send && (chunked || length > 0)) {
      for (const auto& [path, method] : kRoutes) {
        if (req.path == path && req.method == method) {
          return refuse(400, "invalid_request", method + " " + path + " takes no request body");
        }
      }
      FrontDoor::close_connection(res);
      answer_unrouted(req, res);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (is_send && length > settings_.max_body_bytes) {
      return refuse(413, "payload_too_large", too_large_message);
    }
    if (is_send && !chunked && lengths == 0) return refuse(411, "length_required", "Content-Length or chunked transfer coding required");
    // Sends are refused while shutting down (and the connection closed). Health checks and
    // metrics still answer: they are cheap, and the watchdog relies on them.
    if (draining_ && is_send) {
      res.set_header("Retry-After", "1");
      return refuse(503, "overloaded", "shutting down; retry on another instance or in a moment");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // The body is read here, not by cpp-httplib: 0.11.4 applies no limit to a chunked body.
  server.Post("/v1/send", [this, too_large_message](const httplib::Request& req, httplib::Response& res,
                                                    const httplib::ContentReader& read) {
    std::string body;
    body.reserve(req.get_header_value<std::uint64_t>("Content-Length"));  // checked against the limit
    bool too_large = false;
    bool complete = read([&](const char* data, std::size_t size) {
      too_large = body.size() + size > settings_.max_body_bytes;
      if (!too_large) body.append(data, size);
      return !too_large;
    });
    if (!complete) {
      FrontDoor::close_connection(res);
      const std::string id = request_id_of(req, res);
      if (too_large) {
        finish(req, res, 413, error_json(id, "payload_too_large", too_large_message), {});
      } else {
        finish(req, res, 400, error_json(id, "invalid_request", "request body incomplete or badly chunked"), {});
      }
      return;
    }
    // Admitted beyond --max-queue: answered at once. The body was read, so the connection stays
    // open and the client's retry needs no new one.
    if (WorkerPool::shedding()) {
      res.set_header("Retry-After", "1");
      finish(req, res, 503, error_json(request_id_of(req, res), "overloaded", "too many requests in progress; retry in a moment"), {});
      return;
    }
    handle_send(req, res, body);
  });
  // Health, readiness and metrics are not audited: they would drown the requests operators look for.
  server.Get("/healthz", [this](const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, json{{"status", "ok"}, {"request_id", request_id_of(req, res)}});
    metrics_.request(req.path, res.status, 0, nullptr);
  });
  server.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    metrics_.request(req.path, 200, 0, nullptr);
    std::string text = metrics_.render(queue_depth_ ? queue_depth_() : 0);
    const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
    if (runtime->health) {
      text += "# HELP mailrelay_provider_circuit Circuit state by provider: 1 for the current state.\n"
              "# TYPE mailrelay_provider_circuit gauge\n";
      for (const auto& name : runtime->provider_names) {
        auto now = runtime->health->state(name);
        for (auto state : {CircuitState::kClosed, CircuitState::kOpen, CircuitState::kHalfOpen, CircuitState::kParked}) {
          text += "mailrelay_provider_circuit{provider=\"" + name + "\",state=\"" + std::string(to_string(state)) +
                  "\"} " + (state == now ? "1" : "0") + "\n";
        }
      }
    }
    res.set_content(text, "text/plain; version=0.0.4");
  });
  server.Get("/v1/providers", [this](const httplib::Request& req, httplib::Response& res) {
    const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
    std::string id = request_id_of(req, res);
    if (runtime->tokens && !runtime->tokens->authenticate(req.get_header_value("Authorization"))) {
      res.set_header("WWW-Authenticate", "Bearer");
      finish(req, res, 401, error_json(id, "unauthorized", "missing or unknown bearer token"), {});
      return;
    }
    json providers = json::array();
    for (const auto& name : runtime->provider_names) {
      json p = metrics_.provider_json(name);
      std::string circuit = runtime->health ? std::string(to_string(runtime->health->state(name))) : "closed";
      providers.push_back(json{{"name", name}, {"enabled", true}, {"circuit", circuit},
                               {"counters", p["counters"]}, {"last_error", p["last_error"]}});
    }
    metrics_.request(req.path, 200, 0, nullptr);
    send_json(res, 200, json{{"request_id", id}, {"providers", providers}});
  });

  // Ready while not shutting down and at least one provider can be tried.
  server.Get("/readyz", [this](const httplib::Request& req, httplib::Response& res) {
    const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
    bool any = !runtime->health;
    for (const auto& name : runtime->provider_names) {
      any = any || runtime->health->wait(name).count() == 0;
    }
    if (draining_) {
      send_json(res, 503, json{{"status", "draining"}, {"request_id", request_id_of(req, res)}});
    } else if (!any) {
      send_json(res, 503, json{{"status", "no_provider_available"}, {"request_id", request_id_of(req, res)}});
    } else {
      send_json(res, 200, json{{"status", "ready"}, {"request_id", request_id_of(req, res)}});
    }
    metrics_.request(req.path, res.status, 0, nullptr);
  });

  // Every 4xx/5xx that a handler did not already answer gets a JSON error body and an audit
  // line: 404, 405, 413, and the 400s cpp-httplib produces for malformed HTTP.
  server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    // No pre-routing (malformed request line or headers): the request has no start time.
    if (!res.has_header(kRequestIdHeader)) tl_request_started = clock_.now();
    if (res.status == 404) {
      answer_unrouted(req, res);
      return httplib::Server::HandlerResponse::Handled;
    }
    // What cpp-httplib refused itself (a malformed request line or headers, a bad Range) may
    // leave bytes that must not be read as a request.
    FrontDoor::close_connection(res);
    std::string id = request_id_of(req, res);
    if (res.status == 413) {
      finish(req, res, 413, error_json(id, "payload_too_large", "request body is larger than the server accepts"), {});
    } else if (res.status >= 500) {
      finish(req, res, res.status, error_json(id, "internal_error", "internal error"), {});
    } else {
      finish(req, res, res.status, error_json(id, "invalid_request", "malformed HTTP request"), {});
    }
    return httplib::Server::HandlerResponse::Handled;
  }));

  // Last resort: never let exception text reach the client (it would land in a header).
  server.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::string id = request_id_of(req, res);
    log_.error("request {}: unhandled exception: {}", id, what);
    finish(req, res, 500, error_json(id, "internal_error", "internal error; the request id identifies it in the server log"), {});
  });
}

// 405 on one of our paths with another method, 404 elsewhere.
void HttpApi::answer_unrouted(const httplib::Request& req, httplib::Response& res) {
  std::string id = request_id_of(req, res);
  for (const auto& [path, method] : kRoutes) {
    if (req.path == path) {
      res.set_header("Allow", method);
      finish(req, res, 405, error_json(id, "method_not_allowed", req.method + " is not allowed on " + path + "; use " + method), {});
      return;
    }
  }
  finish(req, res, 404, error_json(id, "not_found", "no such endpoint"), {});
}

void HttpApi::handle_send(const httplib::Request& req, httplib::Response& res, const std::string& body) {
  const auto started = tl_request_started;
  const std::string id = request_id_of(req, res);
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  RequestRecord record;
  metrics_.begin_send();
  struct EndSend {
    Metrics& m;
    ~EndSend() { m.end_send(); }
  } end_send{metrics_};

  if (runtime->tokens) {
    record.client = runtime->tokens->authenticate(req.get_header_value("Authorization"));
    if (!record.client) {
      res.set_header("WWW-Authenticate", "Bearer");
      finish(req, res, 401, error_json(id, "unauthorized", "missing or unknown bearer token"), record);
      return;
    }
  }
  if (!is_json_content_type(req.get_header_value("Content-Type"))) {
    finish(req, res, 415, error_json(id, "unsupported_media_type", "Content-Type must be application/json"), record);
    return;
  }
  auto email = parse_email(body);
  if (!email) {
    const Error& e = email.error();
    finish(req, res, 400, error_json(id, e.code, e.message, e.field), record);
    return;
  }
  record.email = &email.value();

  // Idempotency-Key (SPEC section 6), scoped to the client. The guard forgets the key if this
  // handler ends without storing an answer (an exception): a stuck "in flight" would block it.
  const bool keyed = req.has_header("Idempotency-Key");
  const std::string key = req.get_header_value("Idempotency-Key");
  const std::string client = record.client.value_or("");
  if (keyed) {
    if (!is_acceptable_idempotency_key(key)) {
      finish(req, res, 400, error_json(id, "invalid_request", "must be 1 to 255 printable ASCII characters", "Idempotency-Key"), record);
      return;
    }
    auto lookup = idempotency_.begin(client, key, sha256_hex(body));
    switch (lookup.verdict) {
      case IdempotencyCache::Verdict::kReplay:
        metrics_.idempotent_replay();
        res.set_header("Idempotent-Replayed", "true");
        record.outcome = "replayed";
        record.replay_of = lookup.answer.request_id;
        finish(req, res, lookup.answer.status, json::parse(lookup.answer.body), record);
        return;
      case IdempotencyCache::Verdict::kInFlight:
        finish(req, res, 409, error_json(id, "idempotency_in_flight", "a request with this Idempotency-Key is still being processed; retry later"), record);
        return;
      case IdempotencyCache::Verdict::kMismatch:
        finish(req, res, 422, error_json(id, "idempotency_mismatch", "this Idempotency-Key was used with a different request body"), record);
        return;
      case IdempotencyCache::Verdict::kProceed:
        break;
    }
  }
  struct ForgetKeyUnlessAnswered {
    IdempotencyCache* cache;
    const std::string& client;
    const std::string& key;
    ~ForgetKeyUnlessAnswered() {
      if (cache) cache->release(client, key);  // no-op once an answer is stored
    }
  } forget{keyed ? &idempotency_ : nullptr, client, key};

  RelayResult result = runtime->relay->send(email.value(), id, started);
  record.relay = &result;
  json attempts = attempts_to_json(result);
  if (const Attempt* sent = result.accepted()) {
    json body{{"request_id", id},
              {"status", "sent"},
              {"provider", sent->provider},
              {"provider_message_id", sent->result.message_id.empty() ? json(nullptr) : json(sent->result.message_id)},
              {"attempts", std::move(attempts)}};
    if (keyed) idempotency_.complete(client, key, {200, body.dump(), id});
    finish(req, res, 200, std::move(body), record);
    return;
  }
  json body;
  int status = 502;
  switch (result.reason) {
    case StopReason::kDeadline:
      status = 504;
      body = error_json(id, "deadline_exceeded", "no provider accepted the message within the request deadline");
      break;
    case StopReason::kNoProviderAvailable: {
      status = 503;
      auto wait = std::chrono::milliseconds::max();
      for (const auto& name : runtime->provider_names) {
        if (runtime->health) wait = std::min(wait, runtime->health->wait(name));
      }
      res.set_header("Retry-After", std::to_string(std::max<long long>(1, (wait.count() + 999) / 1000)));
      body = error_json(id, "no_provider_available", "every provider is skipped (circuit open or throttled); see attempts");
      break;
    }
    case StopReason::kAmbiguousTimeout:
      status = 504;
      body = error_json(id, "deadline_exceeded",
                        "provider " + result.attempts.back().provider +
                            " did not answer in time and may have accepted the message; not failing over "
                            "(--failover-on-timeout=false)");
      break;
    default:
      body = error_json(id, "all_providers_failed", "every provider refused or failed; see attempts");
      break;
  }
  body["attempts"] = std::move(attempts);
  // Remembered only when a provider may have the message; when surely nothing went out, the key
  // is forgotten so that a retry with it can still send.
  bool may_have_been_sent = std::any_of(result.attempts.begin(), result.attempts.end(),
                                        [](const Attempt& a) { return a.result.may_have_been_sent; });
  if (keyed && may_have_been_sent) idempotency_.complete(client, key, {status, body.dump(), id});
  finish(req, res, status, std::move(body), record);
}

}  // namespace mailrelay
