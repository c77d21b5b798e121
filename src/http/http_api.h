// HttpApi: the HTTP surface (README "API"): the route table's handlers, JSON in and out, status
// mapping. Sending is SendService's, webhooks EventService's, validation email.*'s, connections
// FrontDoor's. Thread-safe;
// one instance serves all event loops.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "audit_log.h"
#include "control_service.h"
#include "clock.h"
#include "event_service.h"
#include "front_door.h"
#include "routes.h"
#include "metrics.h"
#include "provider_control.h"
#include "runtime.h"
#include "message_status.h"
#include "send_service.h"
#include "state_store.h"
#include "suppression_service.h"
#include "suppressions.h"

namespace mailrelay {

struct ApiSettings {
  std::uint64_t max_body_bytes = 10485760;
  std::size_t max_in_flight = 4096;  // sends handled at once; beyond: 503 overloaded
  std::string recipient_key;         // the audit recipient key: suppressions are kept under it
  HttpTransport* transport = nullptr;  // forwards delivery events (--events-forward-url)
  std::size_t max_batch = 100;         // messages in one POST /v1/send/batch
};

class HttpApi {
 public:
  // `control` (may be null: no runtime control) applies the operators' provider overrides.
  HttpApi(std::shared_ptr<const Runtime> runtime, AuditLog& audit, Metrics& metrics, StateStore& store,
          ProviderControl* control, ApiSettings settings, Clock& clock, spdlog::logger& log);

  // New requests use `runtime`; requests in flight finish on the one they started with.
  void set_runtime(std::shared_ptr<const Runtime> runtime) { std::atomic_store(&runtime_, std::move(runtime)); }

  // Registers routes and error/exception handlers on `server`, which must outlive this.
  void install(FrontDoor& server);

  // From now on sends get 503 and every answer closes its connection (the process is shutting
  // down); requests already being handled finish normally. /readyz turns 503, /healthz stays 200.
  void start_draining() { draining_ = true; }

  const SendService& sends() const { return sends_; }

 private:
  // The access phase, on the loop thread from the head alone (FrontDoor): routing, who calls,
  // what the route's body may be. Returns the body limit, or leaves ctx.refusal.
  std::uint64_t admit(const httplib::Request& req, RequestContext& ctx);
  std::optional<HeadRefusal> refusal_of_head(const httplib::Request& req, RequestContext& ctx) const;
  static std::optional<HeadRefusal> refusal_of_content(const httplib::Request& req);
  std::optional<HeadRefusal> refusal_for_route(const httplib::Request& req, const RequestContext& ctx,
                                               const Route& route) const;
  // On a fiber, once the request is whole (or refused): the answer.
  void answer(httplib::Request& req, httplib::Response& res, RequestContext& ctx);
  // What the connection layer found (bad framing, a request that did not arrive, no room for its
  // body), then what the access phase decided.
  std::optional<HeadRefusal> refusal_of_request(RequestContext& ctx);
  std::uint64_t body_limit(BodyRule rule) const;
  void serve(const Route& route, const httplib::Request& req, httplib::Response& res, std::string body);
  void answer_ready(const Runtime& runtime, const std::string& id, httplib::Response& res) const;
  std::string metrics_text(const Runtime& runtime) const;
  nlohmann::ordered_json limits_view(const Runtime& runtime, const std::string& id) const;
  void handle_send(const httplib::Request& req, httplib::Response& res, RequestContext& ctx, std::string body);
  void handle_batch(const httplib::Request& req, httplib::Response& res, RequestContext& ctx, std::string body);
  SendRequest send_request(const httplib::Request& req, httplib::Response& res, const RequestContext& ctx,
                           std::string body) const;
  // PATCH /v1/providers/{name}, PUT and DELETE /v1/providers/order, GET, PUT and DELETE
  // /v1/suppressions/{address}: ControlService's and SuppressionService's (the admin scope was
  // checked on the head).
  void handle_admin(const Route& route, const httplib::Request& req, httplib::Response& res, std::string body);
  // POST /v1/events/{provider} (README "Delivery events and suppressions").
  void handle_event(const httplib::Request& req, httplib::Response& res, std::string body);
  // Writes the audit line, then the answer.
  void finish(const httplib::Request& req, httplib::Response& res, RequestContext& ctx, int status,
              const nlohmann::ordered_json& body, RequestRecord record);

  std::shared_ptr<const Runtime> runtime_;  // accessed with std::atomic_load/atomic_store
  AuditLog& audit_;
  Metrics& metrics_;
  StateStore& store_;
  ProviderControl* control_;
  Suppressions suppressions_;
  SendService sends_;
  MessageStatusService messages_;
  EventService events_;
  ControlService control_service_;
  SuppressionService suppression_service_;
  ApiSettings settings_;
  Clock& clock_;
  spdlog::logger& log_;
  FrontDoor* door_ = nullptr;  // set by install()
  std::atomic<bool> draining_{false};
};

}  // namespace mailrelay
