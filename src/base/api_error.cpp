#include "api_error.h"

#include "ascii.h"

namespace mailrelay {

nlohmann::ordered_json error_json(const std::string& request_id, const std::string& code, const std::string& message,
                                  const std::string& field) {
  nlohmann::ordered_json error{{"code", code}, {"message", message}};
  if (!field.empty()) error["field"] = field;
  return nlohmann::ordered_json{{"request_id", request_id}, {"error", std::move(error)}};
}

bool is_json_content_type(const std::string& value) {
  const std::string v = ascii_lower(value);
  constexpr std::string_view kType = "application/json";
  if (v.compare(0, kType.size(), kType) != 0) return false;
  return v.size() == kType.size() || v[kType.size()] == ';' || v[kType.size()] == ' ';
}

}  // namespace mailrelay
