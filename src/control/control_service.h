// ControlService: runtime control of the providers (README "Other endpoints"): PATCH
// /v1/providers/{name} switches one off or on, PUT and DELETE /v1/providers/order set or reset
// the order, GET /v1/providers shows them. Each change is one "control" audit line. Thread-safe.
#pragma once

#include <spdlog/logger.h>

#include "admin_request.h"
#include "audit_log.h"
#include "clock.h"
#include "metrics.h"
#include "provider_control.h"
#include "runtime.h"

namespace mailrelay {

class ControlService {
 public:
  // `control` may be null: no runtime control (every change is answered 503).
  ControlService(ProviderControl* control, AuditLog& audit, Metrics& metrics, Clock& clock, spdlog::logger& log)
      : control_(control), audit_(audit), metrics_(metrics), clock_(clock), log_(log) {}

  // PATCH /v1/providers/{name}, PUT and DELETE /v1/providers/order (the caller has the admin scope).
  AdminAnswer handle(const Runtime& runtime, const AdminRequest& request);
  // The GET /v1/providers answer (also the answer to every change).
  nlohmann::ordered_json view(const Runtime& runtime, const std::string& request_id) const;

 private:
  std::optional<AdminAnswer> check_switch(const Runtime& runtime, const AdminRequest& request,
                                          const nlohmann::ordered_json& body, ControlRecord& record);
  std::optional<AdminAnswer> check_order(const Runtime& runtime, const AdminRequest& request,
                                         const nlohmann::ordered_json& body, ControlRecord& record);

  ProviderControl* control_;
  AuditLog& audit_;
  Metrics& metrics_;
  Clock& clock_;
  spdlog::logger& log_;
};

}  // namespace mailrelay
