// RequestContext: what the connection layer knows about the one request a handler is serving,
// and what a handler tells it back. One per request, reached with FrontDoor::context(req);
// touched only by the thread serving that request.
#pragma once

#include <functional>
#include <string>

#include "clock.h"
#include "routes.h"

namespace mailrelay {

struct RequestContext {
  // Told by the connection layer.
  std::string client_ip;        // the peer's address, from the socket
  bool head_malformed = false;  // headers could not be restored as sent, or the head is too large
  bool over_budget = false;     // the body did not fit --max-body-bytes-in-flight and was not read
  bool incomplete = false;      // the client stopped sending (timeout or EOF) before the request ended
  std::chrono::steady_clock::duration arriving{};  // incomplete: from its first byte to giving up on it
  // Told by the routing hook (HttpApi), before any handler runs.
  std::string path;             // the path as requested (percent-decoded); req.path is the route's pattern
  const Route* route = nullptr; // null: a path we do not serve (or a target over kMaxTarget)
  std::string route_param;      // the {segment} of a parametric route
  bool target_too_long = false; // the request target is longer than kMaxTarget: 414
  // Set by the handlers.
  Clock::TimePoint started{};   // when the handlers first saw the request (latency)
  bool close_after = false;     // close after the answer; an unread body is read and dropped first
  // Frees the connection's copy of the request once the handler holds the body (memory budget).
  // Set once per connection.
  std::function<void()> release_input;

  // Starts over for the next request on the same connection (release_input stays).
  void reset() {
    std::function<void()> keep = std::move(release_input);
    *this = RequestContext{};
    release_input = std::move(keep);
  }
};

}  // namespace mailrelay
