// Routes: the route table (each method on each path: body rule, access, audited, handler) and the
// matching of paths, by comparing text:
// no regular expression, nothing that recurses or backtracks, time linear in the path. A route
// is a fixed path or a fixed prefix followed by one non-empty segment ("{address}"). Pure;
// thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mailrelay {

// Request targets (path and query) longer than this are answered 414 before routing. The
// longest thing a path carries is an address (254 characters, percent-encoded at most 762).
inline constexpr std::size_t kMaxTarget = 2048;

// What a route's body may be, and so its limit (refused before the body is read).
enum class BodyRule { kNone, kMessage, kWebhook, kControl };
// Who may call it: anyone; any client's token; a token with the admin scope; the sender of mail
// (a token with the send scope, checked by SendService); the provider (its webhook's signature,
// checked by EventService).
enum class Access { kPublic, kAnyClient, kAdmin, kSender, kProvider };
// Which of HttpApi's handlers answers it.
enum class Handler { kSend, kBatch, kMessage, kEvent, kSuppression, kControl, kProviders, kLimits, kOpenApi, kHealth, kReady, kMetrics };

// One row of the route table: everything the HTTP API knows of a method on a path.
struct Route {
  std::string_view method;   // HEAD is answered wherever GET is
  std::string_view pattern;  // "/v1/suppressions/{address}": the metrics label and handler key
  BodyRule body;
  Access access;
  bool audited;              // writes an audit line (health, readiness, metrics and documents do not)
  Handler handler;
};

// The table, in the order the API lists it.
const std::vector<Route>& route_table();

struct RouteMatch {
  const Route* route = nullptr;  // the first row of the path's pattern; null: a path we do not serve
  std::string param;             // the {segment} of a parametric route, as requested
};

// Which {segment}s of a parametric route exist (/v1/events/<a provider with a webhook>); null: any.
using SegmentFilter = bool (*)(std::string_view pattern, std::string_view segment);

RouteMatch match_route(std::string_view path, SegmentFilter exists = nullptr);

// `text` with every %XX (two hex digits) replaced by its byte; anything else as it is.
std::string percent_decoded(std::string_view text);

// The row for `method` on `route`'s path (HEAD as GET), or null (405).
const Route* route_for(const Route& route, std::string_view method);
// The methods `route`'s path takes, for Allow: "GET, HEAD, PUT, DELETE".
std::string allowed_methods(const Route& route);


}  // namespace mailrelay
