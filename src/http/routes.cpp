#include "routes.h"

namespace mailrelay {
namespace {

using B = BodyRule;
using A = Access;
using H = Handler;

}  // namespace

const std::vector<Route>& route_table() {
  static const std::vector<Route> kRoutes = {
      {"POST", "/v1/send", B::kMessage, A::kSender, true, H::kSend},
      {"POST", "/v1/send/batch", B::kMessage, A::kSender, true, H::kBatch},
      {"GET", "/v1/messages/{request_id}", B::kNone, A::kAnyClient, false, H::kMessage},
      {"GET", "/healthz", B::kNone, A::kPublic, false, H::kHealth},
      {"GET", "/readyz", B::kNone, A::kPublic, false, H::kReady},
      {"GET", "/metrics", B::kNone, A::kPublic, false, H::kMetrics},
      {"GET", "/v1/providers", B::kNone, A::kAnyClient, false, H::kProviders},
      {"PUT", "/v1/providers/order", B::kControl, A::kAdmin, true, H::kControl},
      {"DELETE", "/v1/providers/order", B::kNone, A::kAdmin, true, H::kControl},
      {"PATCH", "/v1/providers/{name}", B::kControl, A::kAdmin, true, H::kControl},
      {"GET", "/v1/limits", B::kNone, A::kAnyClient, false, H::kLimits},
      {"POST", "/v1/events/{provider}", B::kWebhook, A::kProvider, true, H::kEvent},
      {"GET", "/v1/suppressions/{address}", B::kNone, A::kAdmin, true, H::kSuppression},
      {"PUT", "/v1/suppressions/{address}", B::kControl, A::kAdmin, true, H::kSuppression},
      {"DELETE", "/v1/suppressions/{address}", B::kNone, A::kAdmin, true, H::kSuppression},
      {"GET", "/v1/openapi.json", B::kNone, A::kPublic, false, H::kOpenApi},
  };
  return kRoutes;
}

namespace {

// `path` against `pattern`: equal, or (for "prefix{name}") the prefix then one non-empty segment.
bool matches(std::string_view pattern, std::string_view path, std::string& param) {
  const std::size_t brace = pattern.find('{');
  if (brace == std::string_view::npos) return path == pattern;
  const std::string_view prefix = pattern.substr(0, brace);
  if (path.size() <= prefix.size() || path.substr(0, prefix.size()) != prefix) return false;
  const std::string_view rest = path.substr(prefix.size());
  if (rest.find('/') != std::string_view::npos) return false;
  param.assign(rest);
  return true;
}

}  // namespace

RouteMatch match_route(std::string_view path, SegmentFilter exists) {
  RouteMatch m;
  // Fixed paths first: /v1/providers/order is not a provider named "order".
  for (const bool fixed : {true, false}) {
    for (const Route& route : route_table()) {
      if ((route.pattern.find('{') == std::string_view::npos) != fixed) continue;
      if (matches(route.pattern, path, m.param) && (fixed || !exists || exists(route.pattern, m.param))) {
        m.route = &route;
        return m;
      }
    }
  }
  m.param.clear();
  return m;
}

const Route* route_for(const Route& route, std::string_view method) {
  if (method == "HEAD") method = "GET";
  for (const Route& row : route_table()) {
    if (row.pattern == route.pattern && row.method == method) return &row;
  }
  return nullptr;
}

std::string allowed_methods(const Route& route) {
  std::string out;
  for (const Route& row : route_table()) {
    if (row.pattern != route.pattern) continue;
    out += (out.empty() ? "" : ", ") + std::string(row.method) + (row.method == "GET" ? ", HEAD" : "");
  }
  return out;
}

std::string percent_decoded(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

}  // namespace mailrelay
