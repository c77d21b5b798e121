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
              : ctx.target_too_long ? req.path.substr(0, 128)
                                    : req.path;
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
  server.set_handlers({[this](const httplib::Request& req, RequestContext& ctx) { return admit(req, ctx); },
                       [this](httplib::Request& req, httplib::Response& res, RequestContext& ctx) { answer(req, res, ctx); }});
}

// The access phase (README "The front door"), nginx's: on the loop thread, from the head alone,
// before any body byte is read or counted. Routing is ours (routes.h): text compared, nothing
// that recurses or backtracks.
std::uint64_t HttpApi::admit(const httplib::Request& req, RequestContext& ctx) {
  ctx.target_too_long = req.target.size() > kMaxTarget;
  // Matched on the path as sent, so that an encoded "/" (%2F: an address may hold one) stays
  // inside its segment; the segment is then decoded. Else on the decoded path.
  RouteMatch match;
  if (!ctx.target_too_long) {
    match = match_route(std::string_view(req.target).substr(0, req.target.find('?')), has_webhook);
    if (match.route) match.param = percent_decoded(match.param);
    if (!match.route) match = match_route(req.path, has_webhook);
  }
  ctx.route = match.route;
  ctx.route_param = std::move(match.param);
  ctx.refusal = refusal_of_head(req, ctx);
  if (ctx.refusal) return 0;
  return body_limit(route_for(*ctx.route, req.method)->body);
}

// On a fiber: the refusal decided on the way in, or the route's handler. Never lets an exception
// out, and never its text to the client (it would land in a header).
void HttpApi::answer(httplib::Request& req, httplib::Response& res, RequestContext& ctx) {
  ctx.started = clock_.now();
  try {
    if (std::optional<HeadRefusal> refusal = refusal_of_request(ctx)) {
      // Refused before routing, or by its route's body rule: the connection closes after the
      // answer. (The front door closes it anyway when a body was left unread.)
      if (refusal->status != 401 && refusal->status != 403 && refusal->status != 404 && refusal->status != 405) {
        close_after(ctx, res);
      }
      for (const auto& [name, value] : refusal->headers) res.set_header(name, value);
      RequestRecord record;
      record.refused_by = refusal->refused_by;
      record.client = ctx.caller.client;
      finish(req, res, ctx, refusal->status, error_json(request_id_of(req, res), refusal->code, refusal->message),
             std::move(record));
      return;
    }
    serve(*route_for(*ctx.route, req.method), req, res, std::move(req.body));
  } catch (...) {
    std::string what = "unknown exception";
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res = httplib::Response{};
    const std::string id = request_id_of(req, res);
    log_.error("request {}: unhandled exception: {}", id, what);
    finish(req, res, ctx, 500, error_json(id, "internal_error", "internal error; the request id identifies it in the server log"), {});
  }
}

// What the connection layer found, first; then the access phase's verdict.
std::optional<HeadRefusal> HttpApi::refusal_of_request(RequestContext& ctx) {
  if (ctx.framing_error) {
    const int status = ctx.framing_error->status;
    return HeadRefusal{status, status == 413 ? "payload_too_large" : status == 414 ? "uri_too_long" : "invalid_request",
                       ctx.framing_error->message, {}, ""};
  }
  if (ctx.incomplete) {
    ctx.started -= ctx.arriving;  // its latency is the time the client took and failed to send it
    return HeadRefusal{400, "invalid_request", "the request did not arrive whole (the client stopped sending or was too slow)", {}, ""};
  }
  // Bodies in memory are bounded (--max-body-bytes-in-flight): this one did not fit and was not
  // read. Counted, and said in the audit line.
  if (ctx.over_budget) {
    metrics_.refused("body_budget");
    return HeadRefusal{503, "overloaded", "too many request bodies in memory; retry in a moment", {{"Retry-After", "1"}},
                       "body_budget"};
  }
  if (!ctx.refusal && !ctx.route) return HeadRefusal{400, "invalid_request", "malformed HTTP request", {}, ""};  // cannot happen
  return ctx.refusal;
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

// One route's handler. Routes that are not audited (health, readiness, metrics, documents) are
// counted here; the others count in finish(), with their audit line.
void HttpApi::serve(const Route& route, const httplib::Request& req, httplib::Response& res, std::string body) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  const std::string id = request_id_of(req, res);
  switch (route.handler) {
    case Handler::kSend: return handle_send(req, res, door_->context(req), std::move(body));
    case Handler::kBatch: return handle_batch(req, res, door_->context(req), std::move(body));
    case Handler::kMessage: {
      StatusAnswer answer = messages_.read(door_->context(req).caller, door_->context(req).route_param, id);
      for (const auto& [name, value] : answer.headers) res.set_header(name, value);
      send_json(res, answer.status, answer.body);
      break;
    }
    case Handler::kEvent: return handle_event(req, res, std::move(body));
    case Handler::kSuppression:
    case Handler::kControl: return handle_admin(route, req, res, std::move(body));
    case Handler::kProviders: send_json(res, 200, control_service_.view(*runtime, id)); break;
    case Handler::kLimits: send_json(res, 200, limits_view(*runtime, id)); break;
    case Handler::kOpenApi: res.set_content(std::string(openapi_document()), kJson); break;
    case Handler::kHealth: send_json(res, 200, json{{"status", "ok"}, {"request_id", id}}); break;
    case Handler::kReady: answer_ready(*runtime, id, res); break;
    case Handler::kMetrics: res.set_content(metrics_text(*runtime), "text/plain; version=0.0.4"); break;
  }
  metrics_.request(std::string(route.pattern), res.status, 0, nullptr);
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
  now.door = DoorGauges{door_->queue_depth(),       door_->event_threads(),       door_->connections(),
                        door_->body_bytes_in_flight(), door_->connections_evicted(), door_->connections_refused()};
  if (runtime.health) {
    for (const auto& name : runtime.provider_names) now.circuits.emplace_back(name, runtime.health->state(name));
  }
  now.audit = audit_.counters();
  now.store = store_.counters();
  now.in_flight = sends_.in_flight();
  now.max_in_flight = settings_.max_in_flight;
  return metrics_.render(now);
}

// Everything that can be refused from the head: a target too long, a compressed or multipart
// body, a path or method we do not serve, a caller the route does not take, the route's body
// rule, draining.
std::optional<HeadRefusal> HttpApi::refusal_of_head(const httplib::Request& req, RequestContext& ctx) const {
  if (ctx.target_too_long) {
    return HeadRefusal{414, "uri_too_long", "the request target is longer than " + std::to_string(kMaxTarget) + " bytes", {}, ""};
  }
  if (std::optional<HeadRefusal> refusal = refusal_of_content(req)) return refusal;
  const Route* row = ctx.route ? route_for(*ctx.route, req.method) : nullptr;
  if (!row && ctx.route) {
    const std::string methods = allowed_methods(*ctx.route);
    return HeadRefusal{405, "method_not_allowed", req.method + " is not allowed on " + req.path + "; use " + methods,
                       {{"Allow", methods}}, ""};
  }
  if (!row) return HeadRefusal{404, "not_found", "no such endpoint", {}, ""};
  // Who calls: the one place a token is checked. A webhook proves itself by its signature, over
  // its body: it is let in with its body held to the unauthenticated share.
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  const unsigned scope = row->access == Access::kSender ? unsigned{kScopeSend} : row->access == Access::kAdmin ? unsigned{kScopeAdmin} : 0u;
  if (row->access != Access::kPublic && row->access != Access::kProvider) {
    ctx.caller = authorize(runtime->tokens.get(), header(req, "Authorization"), scope);
    if (ctx.caller.status == 401) {
      return HeadRefusal{401, ctx.caller.code, ctx.caller.message, {{"WWW-Authenticate", "Bearer"}}, ""};
    }
    if (ctx.caller.status != 0) return HeadRefusal{ctx.caller.status, ctx.caller.code, ctx.caller.message, {}, ""};
  }
  ctx.authenticated = row->access != Access::kProvider;
  return refusal_for_route(req, ctx, *row);
}

// A compressed or multipart body, whatever the route.
std::optional<HeadRefusal> HttpApi::refusal_of_content(const httplib::Request& req) {
  // Nothing here inflates a body: gzip or brotli would grow without bound past any limit.
  if (req.has_header("Content-Encoding")) {
    return HeadRefusal{415, "unsupported_media_type", "Content-Encoding is not accepted; send the body uncompressed", {}, ""};
  }
  const std::string type = header(req, "Content-Type");
  if (type.size() >= 10 && iequals(type.substr(0, 10), "multipart/")) {
    return HeadRefusal{415, "unsupported_media_type", "multipart bodies are not accepted; send application/json", {}, ""};
  }
  return std::nullopt;
}

// The route's body rule (the framing itself was checked by the parser), and draining.
std::optional<HeadRefusal> HttpApi::refusal_for_route(const httplib::Request& req, const RequestContext& ctx,
                                                      const Route& route) const {
  const bool chunked = ctx.chunked;
  const bool has_length = ctx.content_length.has_value();
  const std::uint64_t length = ctx.content_length.value_or(0);
  const std::uint64_t limit = body_limit(route.body);
  if (route.body == BodyRule::kNone && (chunked || length > 0)) {
    return HeadRefusal{400, "invalid_request", req.method + " " + req.path + " takes no request body", {}, ""};
  }
  if (route.body != BodyRule::kNone && length > limit) {
    const std::string n = std::to_string(limit);
    return HeadRefusal{413, "payload_too_large",
                       route.body == BodyRule::kWebhook   ? "a webhook body is at most " + n + " bytes"
                       : route.body == BodyRule::kControl ? "a control request body is at most " + n + " bytes"
                                                          : "request body is larger than " + n + " bytes",
                       {}, ""};
  }
  const bool required = route.body == BodyRule::kMessage || route.body == BodyRule::kWebhook;
  if (required && !chunked && !has_length) {
    return HeadRefusal{411, "length_required", "Content-Length or chunked transfer coding required", {}, ""};
  }
  // Sends are refused while shutting down (and the connection closed). Health checks and
  // metrics still answer: they are cheap.
  if (draining_ && route.body == BodyRule::kMessage) {
    return HeadRefusal{503, "overloaded", "shutting down; retry on another instance or in a moment", {{"Retry-After", "1"}}, ""};
  }
  return std::nullopt;
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
  request.client = ctx.caller.client;
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
    line.path = req.path;
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
void HttpApi::handle_admin(const Route& route, const httplib::Request& req, httplib::Response& res, std::string body) {
  const std::shared_ptr<const Runtime> runtime = std::atomic_load(&runtime_);
  RequestContext& ctx = door_->context(req);
  AdminRequest request{request_id_of(req, res), ctx.client_ip, ctx.caller.client, req.method, ctx.route_param,
                       req.has_header("Content-Type") ? std::optional<std::string>(header(req, "Content-Type")) : std::nullopt,
                       std::move(body)};
  AdminAnswer answer;
  if (route.handler == Handler::kControl) {
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
