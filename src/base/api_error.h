// The API's error body, the same for every route: {"request_id", "error": {"code", "message",
// "field"?}} (README "Errors"), and the one content type its bodies take. Pure; thread-safe.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace mailrelay {

nlohmann::ordered_json error_json(const std::string& request_id, const std::string& code, const std::string& message,
                                  const std::string& field = "");

// application/json, with or without parameters (case-insensitive).
bool is_json_content_type(const std::string& value);

}  // namespace mailrelay
