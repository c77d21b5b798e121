#include "suppression_service.h"

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;  // answers keep the documented key order

AdminAnswer unavailable(const AdminRequest& request) {
  AdminAnswer a = admin_error(request, 503, "state_store_unavailable", "the state store is unreachable; nothing was changed");
  a.headers.emplace_back("Retry-After", "1");
  return a;
}

}  // namespace

AdminAnswer SuppressionService::handle(const AdminRequest& request) {
  if (!is_valid_addr_spec(request.param)) return admin_error(request, 400, "invalid_request", "must be an email address", "address");
  // HEAD is GET without the body; only DELETE deletes.
  return request.method == "GET" || request.method == "HEAD" ? look_up(request) : change(request);
}

AdminAnswer SuppressionService::look_up(const AdminRequest& request) {
  auto found = suppressions_.find(request.param);
  if (!found) return unavailable(request);
  if (!found.value()) return admin_error(request, 404, "not_found", "this address is not suppressed");
  const Suppression& s = *found.value();
  return AdminAnswer{200,
                     json{{"request_id", request.request_id},
                          {"suppressed", true},
                          {"reason", s.reason.empty() ? json(nullptr) : json(s.reason)},
                          {"type", s.type},
                          {"provider", s.provider.empty() ? json(nullptr) : json(s.provider)},
                          {"since", s.since}},
                     "suppressed",
                     {}};
}

// PUT (suppress, with an optional {"reason"}) or DELETE (unsuppress).
AdminAnswer SuppressionService::change(const AdminRequest& request) {
  ControlRecord record{request.request_id, request.client_ip, request.client, "", "", {}, request.param, ""};
  if (request.method == "PUT") {
    if (!request.body.empty() || request.content_type) {
      json body;
      if (auto refused = refused_body(request, body, {"reason"})) return *refused;
      if (auto problem = reason_of(body, record.reason); !problem.empty()) {
        return admin_error(request, 400, "invalid_request", problem, "reason");
      }
    }
    record.action = "suppress";
    if (!suppressions_.add(request.param, {"manual", redact_addresses(record.reason), "", utc_timestamp(clock_)})) {
      return unavailable(request);
    }
  } else {
    record.action = "unsuppress";
    auto removed = suppressions_.remove(request.param);
    if (!removed) return unavailable(request);
    if (!removed.value()) return admin_error(request, 404, "not_found", "this address is not suppressed");
  }
  audit_.control(record);
  return AdminAnswer{200, json{{"request_id", request.request_id}, {"suppressed", record.action == "suppress"}},
                     record.action, {}};
}

}  // namespace mailrelay
