// Routes: the paths the daemon serves and the methods each takes, matched by comparing text:
// no regular expression, nothing that recurses or backtracks, time linear in the path. A route
// is a fixed path or a fixed prefix followed by one non-empty segment ("{address}"). Pure;
// thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mailrelay {

// Request targets (path and query) longer than this are answered 414 before routing. The
// longest thing a path carries is an address (254 characters, percent-encoded at most 762).
inline constexpr std::size_t kMaxTarget = 2048;

struct Route {
  std::string_view pattern;  // "/v1/suppressions/{address}": the metrics label and handler key
  std::string_view methods;  // "GET, HEAD, PUT, DELETE": the Allow header; HEAD wherever GET is
};

struct RouteMatch {
  const Route* route = nullptr;  // null: a path we do not serve
  std::string param;             // the {segment} of a parametric route, as requested
};

// Which {segment}s of a parametric route exist (/v1/events/<a provider with a webhook>); null: any.
using SegmentFilter = bool (*)(std::string_view pattern, std::string_view segment);

RouteMatch match_route(std::string_view path, SegmentFilter exists = nullptr);

// True when `method` is one of `route`'s.
bool route_allows(const Route& route, std::string_view method);

// `pattern` as a regular expression that matches exactly that text (cpp-httplib registers
// handlers by regex; every request path it sees is a route's pattern, never the client's path).
std::string literal_regex(std::string_view pattern);

}  // namespace mailrelay
