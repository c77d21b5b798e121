#include "http_api.h"

#include <algorithm>

#include "ascii.h"
#include "openapi_document.h"
#include "provider_registry.h"
#include "request_id.h"
#include "routes.h"

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;  // answers keep the documented key order

constexpr const char* kJson = "application/json";
constexpr const char* kRequestIdHeader = "X-Request-Id";
constexpr std::uint64_t kMaxControlBody = 65536;

// Webhook bodies: SendGrid posts its events "within approximately 30 seconds or when the batch
// size reaches 768 kilobytes" (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook,
// "Data storage"); Mailgun and Postmark post one event per request
// (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads,
// https://postmarkapp.com/developer/webhooks/webhooks-overview). 1 MiB holds all three.
constexpr std::uint64_t kMaxWebhookBody = 1048576;
constexpr std::string_view kEventsPrefix = "/v1/events/";
constexpr std::string_view kEventsRoute = "/v1/events/{provider}";

// /v1/events/<provider> exists for the providers that have a webhook (a 404 for the others).
bool has_webhook(std::string_view pattern, std::string_view provider) {
  if (pattern != kEventsRoute) return true;
  const ProviderDescriptor* descriptor = find_provider(provider);
  return descriptor && descriptor->webhook;
}
constexpr std::string_view kSuppressionRoute = "/v1/suppressions/{address}";

// The route label for metrics: one of ours, or "other" (unknown paths must not grow the label set).
std::string route_of(const RequestContext& ctx) {
  return ctx.route ? std::string(ctx.route->pattern) : "other";
}

// The path as requested, for the audit line and messages: cpp-httplib's req.path is the route's
// pattern once routed (and what it parsed when it refused the request before routing).
const std::string& path_of(const httplib::Request& req, const RequestContext& ctx) {
  return ctx.path.empty() ? req.path : ctx.path;
}

// A request header's whole value. cpp-httplib's get_header_value goes through a C string and so
// cuts a value at a NUL ("nu\0ll" would pass as "nu"); every rule here applies to all of it.
std::string header(const httplib::Request& req, const char* name) {
  auto it = req.headers.find(name);
  return it == req.headers.end() ? std::string() : it->second;
}

std::string request_id_of(const httplib::Request& req, httplib::Response& res) {
  if (res.has_header(kRequestIdHeader)) return res.get_header_value(kRequestIdHeader);
  std::string id = header(req, kRequestIdHeader);
  if (!is_acceptable_request_id(id)) id = new_request_id();
  res.set_header(kRequestIdHeader, id);
  return id;
}

// Answer with `Connection: close` and close after this response; an unread body is read and
// dropped first (lingering close), and never parsed as the next request.
void close_after(RequestContext& ctx, httplib::Response& res) {
  res.set_header("Connection", "close");
  ctx.close_after = true;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // error_handler_t::replace: provider text is not ours to vouch for; never fail on bad UTF-8.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), kJson);
}

}  // namespace


HttpApi::HttpApi(std::shared_ptr<const Runtime> runtime, AuditLog& audit, Metrics& metrics, StateStore& store,
                 ProviderControl* control, ApiSettings settings, Clock& clock, spdlog::logger& log)
    : runtime_(std::move(runtime)), audit_(audit), metrics_(metrics), store_(store), control_(control),
      suppressions_(store, settings.recipient_key), sends_(store, control, &suppressions_, metrics, settings.max_in_flight), messages_(store),
      events_(store, suppressions_, audit, metrics, settings.transport, clock, log),
      control_service_(control, audit, metrics, clock, log), suppression_service_(suppressions_, audit, clock),
      settings_(settings), clock_(clock), log_(log) {}

void HttpApi::finish(const httplib::Request& req, httplib::Response& res, RequestContext& ctx, int status,
                     const json& body, RequestRecord record) {
  record.request_id = request_id_of(req, res);
  record.client_ip = ctx.client_ip;  // from the socket, never from a header (set for malformed requests too)
  record.method = req.method;
  // A suppression's path names an address: the log has the route (and the control line its hash).
  // A target over the limit is not copied whole into the log.
  record.path = ctx.route && ctx.route->pattern == kSuppressionRoute ? std::string(kSuppressionRoute)
              : ctx.target_too_long ? path_of(req, ctx).substr(0, 128)
                                    : path_of(req, ctx);
  record.status = status;
  if (record.outcome.empty()) record.outcome = body.contains("error") ? body.at("error").at("code").get<std::string>() : "sent";
  record.latency_ms = to_ms(clock_.now() - ctx.started);
  // While shutting down, no answer invites another request on its connection.
  if (draining_) close_after(ctx, res);
  // The line is in the file before the answer is written: an acknowledged request always has one.
  audit_.request(record);
  metrics_.request(route_of(ctx), status, record.latency_ms / 1000, record.relay);
  send_json(res, status, body);
}

void HttpApi::install(FrontDoor& server) {
  door_ = &server;
  server.set_max_body_bytes(settings_.max_body_bytes);
  server.set_body_limit(std::string(kEventsPrefix), body_limit(BodyRule::kWebhook));
  // Routing is ours (routes.h): cpp-httplib matches handlers with std::regex_match, whose
  // executor recurses once per character of the path. It only ever sees a route's pattern.
  server.set_request_hook([](httplib::Request& req, RequestContext& ctx) {
    ctx.path = req.path;
    ctx.target_too_long = req.target.size() > kMaxTarget;
    // Matched on the path as sent, so that an encoded "/" (%2F: an address may hold one) stays
    // inside its segment; the segment is then decoded. Else on the decoded path, as before.
    RouteMatch match;
    if (!ctx.target_too_long) {
      match = match_route(std::string_view(req.target).substr(0, req.target.find('?')), has_webhook);
      if (match.route) match.param = percent_decoded(match.param);
      if (!match.route) match = match_route(req.path, has_webhook);
    }
    ctx.route = match.route;
    ctx.route_param = std::move(match.param);
    req.path = ctx.route ? std::string(ctx.route->pattern) : std::string();
  });
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    return before_body(req, res);
  });
  for (const Route& route : route_table()) add_route(server, route);
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) { return answer_error(req, res); }));
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
    finish(req, res, door_->context(req), 500, error_json(id, "internal_error", "internal error; the request id identifies it in the server log"), {});
  });
}

std::uint64_t HttpApi::body_limit(BodyRule rule) const {
  switch (rule) {
    case BodyRule::kMessage: return settings_.max_body_bytes;
    case BodyRule::kWebhook: return std::min(kMaxWebhookBody, settings_.max_body_bytes);
    case BodyRule::kControl: return kMaxControlBody;
    case BodyRule::kNone: break;
  }
  return 0;
}

// Handlers are registered under their route's pattern (the only path cpp-httplib ever sees).
// Bodies of sends and webhooks are read here, not by cpp-httplib: 0.11.4 applies no limit to a
// chunked body.
void HttpApi::add_route(FrontDoor& server, const Route& route) {
  const std::string at = literal_regex(route.pattern);
  if (route.body == BodyRule::kMessage || route.body == BodyRule::kWebhook) {
    server.Post(at, [this, &route](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
      std::string body;
      if (read_body(req, res, read, body, body_limit(route.body))) serve(route, req, res, std::move(body));
    });
    return;
  }
  auto handler = [this, &route](const httplib::Request& req, httplib::Response& res) { serve(route, req, res, {}); };
  if (route.method == "GET") server.Get(at, handler);
  if (route.method == "PUT") server.Put(at, handler);
  if (route.method == "PATCH") server.Patch(at, handler);
  if (route.method == "DELETE") server.Delete(at, handler);
}

bool HttpApi::read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read,
                        std::string& body, std::uint64_t limit) {
  RequestContext& ctx = door_->context(req);
  body.reserve(req.get_header_value<std::uint64_t>("Content-Length"));  // checked against the limit
  bool too_large = false;
  bool complete = read([&](const char* data, std::size_t size) {
    too_large = body.size() + size > limit;
    if (!too_large) body.append(data, size);
    return !too_large;
  });
  if (ctx.release_input) ctx.release_input();  // the connection's copy of the body goes now
  if (complete) return true;
  close_after(ctx, res);
  const std::string id = request_id_of(req, res);
  if (too_large) {
    finish(req, res, ctx, 413,
           error_json(id, "payload_too_large", "request body is larger than " + std::to_string(limit) + " bytes"), {});
  } else {
    finish(req, res, ctx, 400, error_json(id, "invalid_request", "request body incomplete or badly chunked"), {});
  }
  return false;
}

// One route's handler. Routes that are not audited (health, readiness, metrics, documents) are
// counted here; the others count in finish(), with their audit line.
void HttpApi::serve(const Route& route, const httplib::Request& req, httplib::Response& res, std::string body) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  if (route.access == Access::kAnyClient) {
    const Authorization caller = authorize(runtime->tokens.get(), header(req, "Authorization"), 0);
    if (caller.status != 0) {
      res.set_header("WWW-Authenticate", "Bearer");
      finish(req, res, door_->context(req), caller.status, error_json(request_id_of(req, res), caller.code, caller.message), {});
      return;
    }
  }
  const std::string id = request_id_of(req, res);
  switch (route.handler) {
    case Handler::kSend: return handle_send(req, res, door_->context(req), std::move(body));
    case Handler::kBatch: return handle_batch(req, res, door_->context(req), std::move(body));
    case Handler::kMessage: {
      StatusAnswer answer = messages_.read(*runtime, header(req, "Authorization"), door_->context(req).route_param, id);
      for (const auto& [name, value] : answer.headers) res.set_header(name, value);
      send_json(res, answer.status, answer.body);
      break;
    }
    case Handler::kEvent: return handle_event(req, res, std::move(body));
    case Handler::kSuppression:
    case Handler::kControl: return handle_admin(route, req, res);
    case Handler::kProviders: send_json(res, 200, control_service_.view(*runtime, id)); break;
    case Handler::kLimits: send_json(res, 200, limits_view(*runtime, id)); break;
    case Handler::kOpenApi: res.set_content(std::string(openapi_document()), kJson); break;
    case Handler::kHealth: send_json(res, 200, json{{"status", "ok"}, {"request_id", id}}); break;
    case Handler::kReady: answer_ready(*runtime, id, res); break;
    case Handler::kMetrics: res.set_content(metrics_text(*runtime), "text/plain; version=0.0.4"); break;
  }
  metrics_.request(req.path, res.status, 0, nullptr);
}

// What a message may hold: the configured providers' limits together (README "Providers").
json HttpApi::limits_view(const Runtime& runtime, const std::string& id) const {
  json body{{"request_id", id}, {"providers", runtime.provider_names}};
  json limits = runtime.limits.to_json();
  body["limits"] = std::move(limits["limits"]);
  body["sources"] = std::move(limits["sources"]);
  return body;
}

// Ready while not shutting down, the audit log takes lines, and at least one provider can be
// tried: not switched off by an operator, its circuit not open, not parked. Otherwise 503 with
// each provider's reason.
void HttpApi::answer_ready(const Runtime& runtime, const std::string& id, httplib::Response& res) const {
  const std::shared_ptr<const ProviderOverrides> overrides =
      control_ ? control_->current() : std::shared_ptr<const ProviderOverrides>();
  bool any = false;
  std::string why;
  for (const auto& name : runtime.provider_names) {
    const auto wait = runtime.health ? runtime.health->wait(name) : std::chrono::milliseconds(0);
    const std::string skipped = overrides && !overrides->enabled(name) ? "switched off by an operator"
                                : wait.count() > 0 ? "circuit open or parked for " + std::to_string((wait.count() + 999) / 1000) + " s"
                                                   : "";
    any = any || skipped.empty();
    why += (why.empty() ? "" : "; ") + name + ": " + skipped;
  }
  const char* problem = draining_ ? "draining" : !audit_.healthy() ? "audit_unavailable" : !any ? "no_provider_available" : nullptr;
  json body{{"status", problem ? problem : "ready"}, {"request_id", id}};
  if (problem && std::string_view(problem) == "no_provider_available") body["reason"] = "no provider can be tried: " + why;
  send_json(res, problem ? 503 : 200, body);
}

std::string HttpApi::metrics_text(const Runtime& runtime) const {
  MetricsSnapshot now;
  now.door = DoorGauges{door_->queue_depth(), door_->event_threads(), door_->connections(), door_->body_bytes_in_flight()};
  if (runtime.health) {
    for (const auto& name : runtime.provider_names) now.circuits.emplace_back(name, runtime.health->state(name));
  }
  now.audit = audit_.counters();
  now.store = store_.counters();
  now.in_flight = sends_.in_flight();
  now.max_in_flight = settings_.max_in_flight;
  return metrics_.render(now);
}

// Every 4xx/5xx that a handler did not already answer gets a JSON error body and an audit
// line: 404, 405, 413, and the 400s cpp-httplib produces for malformed HTTP.
httplib::Server::HandlerResponse HttpApi::answer_error(const httplib::Request& req, httplib::Response& res) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
  RequestContext& ctx = door_->context(req);
  // No pre-routing (malformed request line or headers): the request has no start time.
  if (!res.has_header(kRequestIdHeader)) ctx.started = clock_.now() - (ctx.incomplete ? ctx.arriving : Clock::TimePoint::duration{});
  if (res.status == 404) {
    answer_unrouted(req, res, ctx);
    return httplib::Server::HandlerResponse::Handled;
  }
  // What cpp-httplib refused itself (a malformed request line or headers, a bad Range) may
  // leave bytes that must not be read as a request.
  close_after(ctx, res);
  std::string id = request_id_of(req, res);
  if (res.status == 413) {
    finish(req, res, ctx, 413, error_json(id, "payload_too_large", "request body is larger than the server accepts"), {});
  } else if (res.status == 414) {  // a request line over cpp-httplib's own 8 KiB limit
    finish(req, res, ctx, 414,
           error_json(id, "uri_too_long", "the request target is longer than " + std::to_string(kMaxTarget) + " bytes"), {});
  } else if (res.status >= 500) {
    finish(req, res, ctx, res.status, error_json(id, "internal_error", "internal error"), {});
  } else {
    finish(req, res, ctx, res.status, error_json(id, "invalid_request", "malformed HTTP request"), {});
  }
  return httplib::Server::HandlerResponse::Handled;
}

// Everything that can be refused before the body is read is refused here, and the connection
// is then closed: an unread body must never be parsed as the next request (smuggling).
httplib::Server::HandlerResponse HttpApi::before_body(const httplib::Request& req, httplib::Response& res) {
  RequestContext& ctx = door_->context(req);
  ctx.started = clock_.now();
  std::optional<Refusal> refusal = refusal_of_head(ctx);
  const Framing framing = framing_of(req);
  if (!refusal) refusal = framing.refusal;
  if (!refusal) refusal = refusal_of_content(req);
  // A path we do not serve, or a method it does not take: 404 or 405, before any body is read.
  const Route* row = ctx.route ? route_for(*ctx.route, req.method) : nullptr;
  if (!refusal && !row) {
    if (framing.chunked || framing.length > 0) close_after(ctx, res);
    answer_unrouted(req, res, ctx);
    return httplib::Server::HandlerResponse::Handled;
  }
  if (!refusal) refusal = refusal_for_route(req, ctx, *row, framing, res);
  if (!refusal) return httplib::Server::HandlerResponse::Unhandled;
  close_after(ctx, res);
  finish(req, res, ctx, refusal->status, error_json(request_id_of(req, res), refusal->code, refusal->message),
         std::move(refusal->record));
  return httplib::Server::HandlerResponse::Handled;
}

// The body's framing from the headers: one Content-Length that is a number, or chunked once.
HttpApi::Framing HttpApi::framing_of(const httplib::Request& req) {
  Framing f;
  f.chunked = req.has_header("Transfer-Encoding");
  f.lengths = req.get_header_value_count("Content-Length");
  const std::string length_text = header(req, "Content-Length");
  auto refuse = [&f](const char* message) {
    f.refusal = Refusal{400, "invalid_request", message, {}};
    return f;
  };
  if (f.chunked && (req.get_header_value_count("Transfer-Encoding") != 1 ||
                    !iequals(header(req, "Transfer-Encoding"), "chunked"))) {
    return refuse("Transfer-Encoding must be chunked, once");
  }
  if (f.chunked && f.lengths > 0) return refuse("Content-Length and Transfer-Encoding together");
  if (f.lengths > 1) return refuse("more than one Content-Length");
  if (f.lengths == 1 && (length_text.empty() || length_text.size() > 18 ||
                         !std::all_of(length_text.begin(), length_text.end(), ::isdigit))) {
    return refuse("Content-Length is not a number");
  }
  f.length = f.lengths == 1 ? std::stoull(length_text) : 0;
  return f;
}

// A head that did not parse or did not arrive, a target too long: whatever the route.
std::optional<HttpApi::Refusal> HttpApi::refusal_of_head(RequestContext& ctx) {
  if (ctx.head_malformed) return Refusal{400, "invalid_request", "malformed request headers", {}};
  if (ctx.target_too_long) {
    return Refusal{414, "uri_too_long", "the request target is longer than " + std::to_string(kMaxTarget) + " bytes", {}};
  }
  if (ctx.incomplete) {
    ctx.started -= ctx.arriving;  // its latency is the time the client took and failed to send it
    return Refusal{400, "invalid_request", "the request did not arrive whole (the client stopped sending or was too slow)", {}};
  }
  return std::nullopt;
}

// A compressed or multipart body, whatever the route.
std::optional<HttpApi::Refusal> HttpApi::refusal_of_content(const httplib::Request& req) {
  // cpp-httplib would inflate gzip and brotli bodies without bound before any limit applies.
  if (req.has_header("Content-Encoding")) {
    return Refusal{415, "unsupported_media_type", "Content-Encoding is not accepted; send the body uncompressed", {}};
  }
  // Bodies here are JSON; cpp-httplib would parse a multipart one itself, with std::regex.
  const std::string type = header(req, "Content-Type");
  if (type.size() >= 10 && iequals(type.substr(0, 10), "multipart/")) {
    return Refusal{415, "unsupported_media_type", "multipart bodies are not accepted; send application/json", {}};
  }
  return std::nullopt;
}

// The route's body rule, the memory budget for bodies, and draining.
std::optional<HttpApi::Refusal> HttpApi::refusal_for_route(const httplib::Request& req, const RequestContext& ctx,
                                                           const Route& route, const Framing& framing,
                                                           httplib::Response& res) {
  const bool has_body = framing.chunked || framing.length > 0;
  const std::uint64_t limit = body_limit(route.body);
  if (route.body == BodyRule::kNone && has_body) {
    return Refusal{400, "invalid_request", req.method + " " + path_of(req, ctx) + " takes no request body", {}};
  }
  if (route.body != BodyRule::kNone && framing.length > limit) {
    const std::string n = std::to_string(limit);
    return Refusal{413, "payload_too_large",
                   route.body == BodyRule::kWebhook   ? "a webhook body is at most " + n + " bytes"
                   : route.body == BodyRule::kControl ? "a control request body is at most " + n + " bytes"
                                                      : "request body is larger than " + n + " bytes",
                   {}};
  }
  const bool required = route.body == BodyRule::kMessage || route.body == BodyRule::kWebhook;
  if (required && !framing.chunked && framing.lengths == 0) {
    return Refusal{411, "length_required", "Content-Length or chunked transfer coding required", {}};
  }
  // Bodies in memory are bounded (--max-body-bytes-in-flight): this one did not fit and was
  // not read. Counted, and said in the audit line.
  if (ctx.over_budget) {
    metrics_.refused("body_budget");
    res.set_header("Retry-After", "1");
    RequestRecord record;
    record.refused_by = "body_budget";
    return Refusal{503, "overloaded", "too many request bodies in memory; retry in a moment", std::move(record)};
  }
  // Sends are refused while shutting down (and the connection closed). Health checks and
  // metrics still answer: they are cheap, and the watchdog relies on them.
  if (draining_ && route.body == BodyRule::kMessage) {
    res.set_header("Retry-After", "1");
    return Refusal{503, "overloaded", "shutting down; retry on another instance or in a moment", {}};
  }
  return std::nullopt;
}

// 405 on one of our paths with another method, 404 elsewhere.
void HttpApi::answer_unrouted(const httplib::Request& req, httplib::Response& res, RequestContext& ctx) {
  std::string id = request_id_of(req, res);
  if (ctx.route) {
    const std::string methods = allowed_methods(*ctx.route);
    res.set_header("Allow", methods);
    finish(req, res, ctx, 405,
           error_json(id, "method_not_allowed", req.method + " is not allowed on " + path_of(req, ctx) + "; use " + methods), {});
    return;
  }
  finish(req, res, ctx, 404, error_json(id, "not_found", "no such endpoint"), {});
}

namespace {

// The audit line's view of one send (it points into the report).
RequestRecord record_of(SendReport& report) {
  RequestRecord record;
  record.client = report.client;
  record.outcome = report.outcome;
  record.replay_of = report.replay_of;
  record.refused_by = report.refused_by;
  record.state_store_unavailable = report.store_unavailable;
  record.email = report.email ? &*report.email : nullptr;
  record.relay = report.relay ? &*report.relay : nullptr;
  if (record.relay && report.body.contains("attempts")) record.attempts = &report.body["attempts"];
  return record;
}

}  // namespace

SendRequest HttpApi::send_request(const httplib::Request& req, httplib::Response& res, const RequestContext& ctx,
                                  std::string body) const {
  SendRequest request;
  request.request_id = request_id_of(req, res);
  request.started = ctx.started;
  request.authorization = header(req, "Authorization");
  request.content_type = header(req, "Content-Type");
  request.body = std::move(body);
  return request;
}

void HttpApi::handle_send(const httplib::Request& req, httplib::Response& res, RequestContext& ctx, std::string body) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  SendRequest request = send_request(req, res, ctx, std::move(body));
  if (req.has_header("Idempotency-Key")) request.idempotency_key = header(req, "Idempotency-Key");
  SendReport report = sends_.handle(*runtime, std::move(request));
  for (const auto& [name, value] : report.headers) res.set_header(name, value);
  finish(req, res, ctx, report.status, report.body, record_of(report));  // the record points into the report
}

// One audit line per message (its own request id, "batch_id" the batch's), then the batch's own.
void HttpApi::handle_batch(const httplib::Request& req, httplib::Response& res, RequestContext& ctx, std::string body) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  SendRequest request = send_request(req, res, ctx, std::move(body));
  const std::string batch_id = request.request_id;
  BatchReport report = sends_.handle_batch(*runtime, std::move(request), settings_.max_batch);
  for (const auto& [name, value] : report.headers) res.set_header(name, value);
  for (std::size_t i = 0; i < report.items.size(); ++i) {
    RequestRecord line = record_of(report.items[i]);
    line.request_id = report.ids[i];
    line.batch_id = batch_id;
    line.client_ip = ctx.client_ip;
    line.method = req.method;
    line.path = path_of(req, ctx);
    line.status = report.items[i].status;
    if (line.outcome.empty()) line.outcome = "sent";
    line.latency_ms = to_ms(clock_.now() - ctx.started);
    audit_.request(line);
  }
  RequestRecord record;
  record.client = report.client;
  record.outcome = report.outcome;
  finish(req, res, ctx, report.status, report.body, std::move(record));
}

// A "reason" member of a control body: at most 200 characters, no control characters. Returns the
// problem, or "" (reason set, or left empty when absent).
void HttpApi::handle_event(const httplib::Request& req, httplib::Response& res, std::string body) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  WebhookRequest request;
  request.provider = door_->context(req).route_param;
  request.request_id = request_id_of(req, res);
  if (const ProviderDescriptor* provider = find_provider(request.provider); provider && provider->webhook) {
    for (const std::string& name : provider->webhook->headers) request.headers[name] = header(req, name.c_str());
  }
  request.body = std::move(body);
  WebhookReport report = events_.handle(runtime->events, request);
  for (const auto& [name, value] : report.headers) res.set_header(name, value);
  RequestRecord record;
  record.outcome = report.outcome;
  finish(req, res, door_->context(req), report.status, report.body, std::move(record));
}

// Provider control and suppressions: the admin scope, then the service.
void HttpApi::handle_admin(const Route& route, const httplib::Request& req, httplib::Response& res) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  RequestContext& ctx = door_->context(req);
  AdminRequest request{request_id_of(req, res), ctx.client_ip, std::nullopt, req.method, ctx.route_param,
                       req.has_header("Content-Type") ? std::optional<std::string>(header(req, "Content-Type")) : std::nullopt,
                       req.body};
  const Authorization caller = authorize(runtime->tokens.get(), header(req, "Authorization"), kScopeAdmin);
  request.client = caller.client;
  AdminAnswer answer;
  if (caller.status != 0) {
    answer = admin_error(request, caller.status, caller.code, caller.message);
    if (caller.status == 401) answer.headers.emplace_back("WWW-Authenticate", "Bearer");
  } else if (route.handler == Handler::kControl) {
    answer = control_service_.handle(*runtime, request);
  } else {
    answer = suppression_service_.handle(request);
  }
  for (const auto& [name, value] : answer.headers) res.set_header(name, value);
  RequestRecord record;
  record.client = request.client;
  record.outcome = answer.outcome;
  finish(req, res, ctx, answer.status, answer.body, std::move(record));
}

}  // namespace mailrelay
