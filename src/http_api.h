// HttpApi: the HTTP surface (SPEC section 3): routes, JSON in and out, status mapping. Nothing
// else: validation is in email.*, sending in relay.*. Thread-safe; one instance serves all workers.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "audit_log.h"
#include "clock.h"
#include "idempotency_cache.h"
#include "metrics.h"
#include "relay.h"
#include "runtime.h"

namespace mailrelay {

struct ApiSettings {
  std::uint64_t max_body_bytes = 10485760;
};

class HttpApi {
 public:
  // `queue_depth` reports connections waiting for a worker (for /metrics).
  HttpApi(std::shared_ptr<const Runtime> runtime, AuditLog& audit, Metrics& metrics, IdempotencyCache& idempotency,
          ApiSettings settings, Clock& clock, spdlog::logger& log, std::function<std::size_t()> queue_depth = {});

  // New requests use `runtime`; requests in flight finish on the one they started with.
  void set_runtime(std::shared_ptr<const Runtime> runtime) { std::atomic_store(&runtime_, std::move(runtime)); }

  // Registers routes, error/exception handlers and the body limit on `server`.
  void install(httplib::Server& server);

  // From now on new requests get 503 (the process is shutting down); requests already being
  // handled finish normally. /readyz turns 503 too, /healthz stays 200.
  void start_draining() { draining_ = true; }

 private:
  void handle_send(const httplib::Request& req, httplib::Response& res, const std::string& body);
  void answer_unrouted(const httplib::Request& req, httplib::Response& res);
  // Writes the audit line, then the answer.
  void finish(const httplib::Request& req, httplib::Response& res, int status, nlohmann::ordered_json body,
              RequestRecord record);

  std::shared_ptr<const Runtime> runtime_;  // accessed with std::atomic_load/atomic_store
  AuditLog& audit_;
  Metrics& metrics_;
  IdempotencyCache& idempotency_;
  std::function<std::size_t()> queue_depth_;
  ApiSettings settings_;
  Clock& clock_;
  spdlog::logger& log_;
  std::atomic<bool> draining_{false};
};

}  // namespace mailrelay
