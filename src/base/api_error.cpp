#include "api_error.h"

namespace mailrelay {

nlohmann::ordered_json error_json(const std::string& request_id, const std::string& code, const std::string& message,
                                  const std::string& field) {
  nlohmann::ordered_json error{{"code", code}, {"message", message}};
  if (!field.empty()) error["field"] = field;
  return nlohmann::ordered_json{{"request_id", request_id}, {"error", std::move(error)}};
}

}  // namespace mailrelay
