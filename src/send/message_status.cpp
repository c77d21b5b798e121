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
  // Written out by hand: it runs on every send, and a JSON tree built for one dump costs more
  // than the text (the same keys as MessageStatus in docs/openapi.yaml).
  auto text = [](const std::string& value) { return json(value).dump(-1, ' ', false, json::error_handler_t::replace); };
  auto member = [&](const char* key) {
    auto it = report.body.find(key);
    return it == report.body.end() ? std::string("null") : it->dump(-1, ' ', false, json::error_handler_t::replace);
  };
  const bool sent = report.status == 200;
  auto attempts = report.body.find("attempts");
  std::string out = "{\"request_id\":" + text(request_id);
  out += ",\"client\":" + (report.client ? text(*report.client) : std::string("null"));
  out += sent ? ",\"status\":\"sent\",\"error\":null" : ",\"status\":\"failed\",\"error\":" + text(report.outcome);
  out += ",\"http_status\":" + std::to_string(report.status);
  out += ",\"provider\":" + member("provider");
  out += ",\"provider_message_id\":" + member("provider_message_id");
  out += report.body.contains("sandbox") ? ",\"sandbox\":true" : ",\"sandbox\":false";
  out += ",\"attempts\":" + (attempts == report.body.end() ? std::string("[]")
                                                          : redacted_attempts(*attempts).dump(-1, ' ', false, json::error_handler_t::replace));
  out += ",\"received_at\":" + text(received_at) + ",\"completed_at\":" + text(completed_at) + "}";
  return out;
}

StatusAnswer MessageStatusService::read(const Authorization& caller, const std::string& message_id, const std::string& id) {
  const bool admin = (caller.scopes & kScopeAdmin) != 0;
  auto found = store_.messages(caller.client.value_or(""), message_id, admin);
  if (!found) {
    StatusAnswer unavailable = error_answer(503, id, "state_store_unavailable", "the state store is unreachable; retry in a moment");
    unavailable.headers.emplace_back("Retry-After", "1");
    return unavailable;
  }
  // The store answers with the caller's record (or, for admin, everyone's) and any record kept
  // before per-client ids, which only the client its outcome names may read.
  const json caller_name = caller.client ? json(*caller.client) : json();
  json messages = json::array();
  for (const MessageRecord& record : found.value()) {
    json outcome = json::parse(record.outcome, nullptr, false);
    if (!outcome.is_object() || (!admin && outcome["client"] != caller_name)) continue;
    json events = json::array();
    for (const std::string& text : record.events) {
      json event = json::parse(text, nullptr, false);
      if (event.is_object()) events.push_back(std::move(event));
    }
    outcome["events"] = std::move(events);
    messages.push_back(std::move(outcome));
  }
  if (messages.empty()) {
    return error_answer(404, id, "not_found", "no message of yours with this request id, or older than --message-status-ttl");
  }
  // `message`: the caller's own when it has one, else (admin) the first.
  json message = messages.front();
  for (const json& each : messages) {
    if (each["client"] == caller_name) message = each;
  }
  return StatusAnswer{200, json{{"request_id", id}, {"message", std::move(message)}, {"messages", std::move(messages)}}, {}};
}

}  // namespace mailrelay
