// What the admin endpoints (provider control, suppressions) take and answer, knowing nothing of
// HTTP libraries. Plain values; thread-compatible.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mailrelay {

struct AdminRequest {
  std::string request_id;
  std::string client_ip;
  std::optional<std::string> client;  // the token's name; none for a loopback caller
  std::string method;                 // GET (HEAD as GET), PUT, PATCH, DELETE
  std::string param;                  // the path's {name} or {address}
  std::optional<std::string> content_type;  // nullopt when the request had none
  std::string body;
};

struct AdminAnswer {
  int status = 200;
  nlohmann::ordered_json body;
  std::string outcome;  // for the audit line: the action taken, or the error code
  std::vector<std::pair<std::string, std::string>> headers;
};

// The error answer {"request_id", "error": {...}}.
AdminAnswer admin_error(const AdminRequest& request, int status, const std::string& code, const std::string& message,
                        const std::string& field = "");

// The optional "reason" of a control body: the problem with it, or "" (and `reason` set).
std::string reason_of(const nlohmann::ordered_json& body, std::string& reason);

// The body of a PUT or PATCH as a JSON object of `members` only, or the answer that refuses it
// (415, or 400 with `field` naming an unknown member).
std::optional<AdminAnswer> refused_body(const AdminRequest& request, nlohmann::ordered_json& body,
                                        std::initializer_list<std::string_view> members);

}  // namespace mailrelay
