// RequestContext: what the connection layer knows about the one request a handler is serving,
// and what the access phase and the handlers tell it back. One per request, reached with
// FrontDoor::context(req); touched only by the loop thread that owns the connection.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clock.h"
#include "request_framing.h"
#include "routes.h"
#include "token_store.h"

namespace mailrelay {

// An answer decided from the head alone (HttpApi::admit): given without reading the body.
struct HeadRefusal {
  int status = 400;
  std::string code, message;
  std::vector<std::pair<std::string, std::string>> headers;  // WWW-Authenticate, Allow, Retry-After
  std::string refused_by;                                     // the audit line's refused_by
};

struct RequestContext {
  // Told by the connection layer.
  std::string client_ip;                      // the peer's address, from the socket
  std::optional<FramingError> framing_error;  // the parser refused the request: answered, never executed
  bool chunked = false;                       // the head's framing, as the parser read it
  std::optional<std::uint64_t> content_length;
  bool over_budget = false;     // the body did not fit --max-body-bytes-in-flight and was not read
  bool incomplete = false;      // the client stopped sending (timeout or EOF) before the request ended
  std::chrono::steady_clock::duration arriving{};  // incomplete: from its first byte to giving up on it
  // Told by the access phase (HttpApi::admit), on the head, before any body byte is read.
  const Route* route = nullptr; // null: a path we do not serve (or a target over kMaxTarget)
  std::string route_param;      // the {segment} of a parametric route
  bool target_too_long = false; // the request target is longer than kMaxTarget: 414
  std::optional<HeadRefusal> refusal;  // answered without reading the body
  Authorization caller;         // who calls, when the route's access rule names a token
  bool authenticated = false;   // the caller proved who it is on the head: its body may use the whole budget
  // Set by the handlers.
  Clock::TimePoint started{};   // when the handlers first saw the request (latency)
  bool close_after = false;     // close after the answer

  // Starts over for the next request on the same connection.
  void reset() { *this = RequestContext{}; }
};

}  // namespace mailrelay
