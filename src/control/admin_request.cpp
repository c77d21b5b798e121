#include "admin_request.h"

#include <algorithm>

#include "api_error.h"
#include "ascii.h"

namespace mailrelay {

using json = nlohmann::ordered_json;

AdminAnswer admin_error(const AdminRequest& request, int status, const std::string& code, const std::string& message,
                        const std::string& field) {
  AdminAnswer a;
  a.status = status;
  a.outcome = code;
  a.body = error_json(request.request_id, code, message, field);
  return a;
}

std::string reason_of(const json& body, std::string& reason) {
  if (!body.contains("reason")) return "";
  const json& value = body["reason"];
  if (!value.is_string() || value.get<std::string>().size() > 200 ||
      std::any_of(value.get_ref<const std::string&>().begin(), value.get_ref<const std::string&>().end(),
                  [](char c) { return static_cast<unsigned char>(c) < 32; })) {
    return "must be a string of at most 200 characters, no control characters";
  }
  reason = value.get<std::string>();
  return "";
}

std::optional<AdminAnswer> refused_body(const AdminRequest& request, json& body,
                                        std::initializer_list<std::string_view> members) {
  if (!is_json_content_type(request.content_type.value_or(""))) {
    return admin_error(request, 415, "unsupported_media_type", "Content-Type must be application/json");
  }
  body = json::parse(request.body, nullptr, false);
  if (!body.is_object()) return admin_error(request, 400, "invalid_request", "the body must be a JSON object");
  // Strict, like a send's body (SPEC §20): a misspelt member is an error, not silently ignored.
  for (const auto& item : body.items()) {
    if (std::find(members.begin(), members.end(), item.key()) == members.end()) {
      std::string known;
      for (std::string_view m : members) known += (known.empty() ? "" : ", ") + std::string(m);
      return admin_error(request, 400, "invalid_request", "is not a member of this body (it takes " + known + ")",
                         item.key());
    }
  }
  return std::nullopt;
}

}  // namespace mailrelay
