#include "routes.h"

namespace mailrelay {
namespace {

const Route kRoutes[] = {
    {"/v1/send", "POST"},
    {"/healthz", "GET, HEAD"},
    {"/readyz", "GET, HEAD"},
    {"/metrics", "GET, HEAD"},
    {"/v1/providers", "GET, HEAD"},
    {"/v1/providers/order", "PUT, DELETE"},
    {"/v1/providers/{name}", "PATCH"},
    {"/v1/limits", "GET, HEAD"},
    {"/v1/events/{provider}", "POST"},
    {"/v1/suppressions/{address}", "GET, HEAD, PUT, DELETE"},
    {"/v1/openapi.json", "GET, HEAD"},
};

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
    for (const Route& route : kRoutes) {
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

bool route_allows(const Route& route, std::string_view method) {
  std::string_view rest = route.methods;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    if (rest.substr(0, comma) == method) return true;
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 2);  // ", "
  }
  return false;
}

std::string literal_regex(std::string_view pattern) {
  std::string out;
  for (char c : pattern) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace mailrelay
