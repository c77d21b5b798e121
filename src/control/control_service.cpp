#include "control_service.h"

#include <algorithm>
#include <cmath>

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;  // answers keep the documented key order

bool known(const Runtime& runtime, const std::string& name) {
  const auto& names = runtime.provider_names;
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

AdminAnswer ControlService::handle(const Runtime& runtime, const AdminRequest& request) {
  if (!control_) return admin_error(request, 503, "state_store_unavailable", "runtime control is not available");
  ControlRecord record{request.request_id, request.client_ip, request.client, "", "", {}, "", ""};
  json body;
  if (request.method != "DELETE") {
    const bool patch = request.method == "PATCH";
    if (auto refused = refused_body(request, body, {patch ? "enabled" : "order", "reason"})) return *refused;
    if (auto problem = reason_of(body, record.reason); !problem.empty()) {
      return admin_error(request, 400, "invalid_request", problem, "reason");
    }
  }
  Result<bool> done = true;
  if (request.method == "PATCH") {
    if (auto refused = check_switch(runtime, request, body, record)) return *refused;
    done = control_->switch_provider(
        record.provider, {record.action == "enable", request.client.value_or(""), record.reason, utc_timestamp(clock_)});
  } else if (request.method == "PUT") {
    if (auto refused = check_order(runtime, request, body, record)) return *refused;
    done = control_->set_order(record.order);
  } else {
    record.action = "reset_order";
    done = control_->set_order({});
  }
  if (!done) {
    AdminAnswer a = admin_error(request, 503, "state_store_unavailable", "the state store is unreachable; nothing was changed");
    a.headers.emplace_back("Retry-After", "1");
    return a;
  }
  audit_.control(record);
  log_.info("control: {} {} by {}{}", record.action, record.provider, request.client.value_or("(loopback)"),
            record.reason.empty() ? "" : " (" + record.reason + ")");
  return AdminAnswer{200, view(runtime, request.request_id), record.action, {}};
}

// PATCH /v1/providers/{name} {"enabled": bool, "reason"?}: the refusal, or nullopt (record filled).
std::optional<AdminAnswer> ControlService::check_switch(const Runtime& runtime, const AdminRequest& request,
                                                           const json& body, ControlRecord& record) {
  record.provider = request.param;
  if (!known(runtime, record.provider)) {
    return admin_error(request, 404, "not_found", "no provider '" + record.provider + "' is configured");
  }
  if (!body.contains("enabled") || !body["enabled"].is_boolean()) {
    return admin_error(request, 400, "invalid_request", "must be true or false", "enabled");
  }
  const bool enabled = body["enabled"].get<bool>();
  record.action = enabled ? "enable" : "disable";
  return std::nullopt;
}

// PUT /v1/providers/order {"order": [names], "reason"?}: the refusal, or nullopt (record filled).
std::optional<AdminAnswer> ControlService::check_order(const Runtime& runtime, const AdminRequest& request,
                                                     const json& body, ControlRecord& record) {
  record.action = "set_order";
  if (!body.contains("order") || !body["order"].is_array() || body["order"].empty()) {
    return admin_error(request, 400, "invalid_request", "must be a non-empty array of provider names", "order");
  }
  for (std::size_t i = 0; i < body["order"].size(); ++i) {
    const json& name = body["order"][i];
    const std::string field = "order[" + std::to_string(i) + "]";
    if (!name.is_string()) return admin_error(request, 400, "invalid_request", "must be a provider name", field);
    if (!known(runtime, name.get<std::string>())) {
      return admin_error(request, 404, "not_found", "no provider '" + name.get<std::string>() + "' is configured", field);
    }
    if (std::find(record.order.begin(), record.order.end(), name.get<std::string>()) != record.order.end()) {
      return admin_error(request, 400, "invalid_request", "names a provider twice", field);
    }
    record.order.push_back(name.get<std::string>());
  }
  return std::nullopt;
}

json ControlService::view(const Runtime& runtime, const std::string& request_id) const {
  const std::shared_ptr<const ProviderOverrides> overrides =
      control_ ? control_->current() : std::make_shared<const ProviderOverrides>();
  json providers = json::array();
  for (const auto& name : runtime.provider_names) {
    json p = metrics_.provider_json(name);
    std::string circuit = runtime.health ? std::string(to_string(runtime.health->state(name))) : "closed";
    auto change = overrides->providers.find(name);
    const bool switched = change != overrides->providers.end();
    const bool enabled = !switched || change->second.enabled;
    json item{{"name", name}, {"enabled", enabled}};
    item["disabled_by"] = enabled || change->second.disabled_by.empty() ? json(nullptr) : json(change->second.disabled_by);
    item["reason"] = switched && !change->second.reason.empty() ? json(change->second.reason) : json(nullptr);
    item["since"] = switched ? json(change->second.since) : json(nullptr);
    item["circuit"] = circuit;
    item["counters"] = p["counters"];
    item["last_error"] = p["last_error"];
    const ProviderFigures f = runtime.health ? runtime.health->figures(name) : ProviderFigures{};
    item["latency_ms"] = std::round(f.latency_ms * 10) / 10;
    item["error_rate"] = std::round(f.error_rate * 1000) / 1000;
    item["calls"] = f.calls;
    providers.push_back(std::move(item));
  }
  return json{{"request_id", request_id},
              {"providers", providers},
              {"strategy", runtime.relay ? std::string(to_string(runtime.relay->settings().strategy)) : "failover"},
              {"order", runtime.relay ? runtime.relay->current_order(*overrides)
                                      : effective_order(runtime.provider_names, *overrides)},
              {"configured_order", runtime.provider_names},
              {"order_overridden", !overrides->order.empty()}};
}

}  // namespace mailrelay
