#include "message_status.h"

#include "api_error.h"
#include "send_service.h"

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;

StatusAnswer error_answer(int status, const std::string& id, const std::string& code, const std::string& message) {
  return StatusAnswer{status, error_json(id, code, message), {}};
}

}  // namespace

std::string message_outcome(const std::string& request_id, const SendReport& report, const std::string& received_at,
                            const std::string& completed_at) {
  const bool sent = report.status == 200;
  const json& body = report.body;
  json out{{"request_id", request_id},
           {"client", report.client ? json(*report.client) : json(nullptr)},
           {"status", sent ? "sent" : "failed"},
           {"error", sent ? json(nullptr) : json(report.outcome)},
           {"http_status", report.status},
           {"provider", body.contains("provider") ? body["provider"] : json(nullptr)},
           {"provider_message_id", body.contains("provider_message_id") ? body["provider_message_id"] : json(nullptr)},
           {"sandbox", body.contains("sandbox")},
           {"attempts", redacted_attempts(body.contains("attempts") ? body["attempts"] : json::array())},
           {"received_at", received_at},
           {"completed_at", completed_at}};
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

StatusAnswer MessageStatusService::read(const Runtime& runtime, std::string_view authorization,
                                        const std::string& message_id, const std::string& id) {
  const Authorization caller = authorize(runtime.tokens.get(), authorization, 0);
  if (caller.status != 0) {
    StatusAnswer refused = error_answer(caller.status, id, caller.code, caller.message);
    if (caller.status == 401) refused.headers.emplace_back("WWW-Authenticate", "Bearer");
    return refused;
  }
  auto found = store_.message(message_id);
  if (!found) {
    StatusAnswer unavailable = error_answer(503, id, "state_store_unavailable", "the state store is unreachable; retry in a moment");
    unavailable.headers.emplace_back("Retry-After", "1");
    return unavailable;
  }
  const std::optional<MessageRecord>& record = found.value();
  json outcome = record ? json::parse(record->outcome, nullptr, false) : json();
  const bool admin = !runtime.tokens || authorize(runtime.tokens.get(), authorization, kScopeAdmin).status == 0;
  const bool own = outcome.is_object() && caller.client && outcome["client"] == *caller.client;
  if (!outcome.is_object() || (!admin && !own)) {
    return error_answer(404, id, "not_found",
                        "no message with this request id: unknown, sent by another client, or older than --message-status-ttl");
  }
  json events = json::array();
  for (const std::string& text : record->events) {
    json event = json::parse(text, nullptr, false);
    if (event.is_object()) events.push_back(std::move(event));
  }
  outcome["events"] = std::move(events);
  return StatusAnswer{200, json{{"request_id", id}, {"message", std::move(outcome)}}, {}};
}

}  // namespace mailrelay
