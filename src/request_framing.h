// Request framing: decides from the bytes received so far whether an HTTP/1.1 request is
// complete, so that a connection is given a thread only when its whole request is in memory
// (a slow client costs a buffer, never a worker). Pure; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mailrelay {

struct Framing {
  enum class State {
    kNeedMore,  // keep reading
    kComplete,  // `size` bytes are one whole request (head and body)
    kRefuse,    // the head is complete but the body will not be read (bad framing, or larger than
                // the limit): the request handler refuses it from the head alone
  };
  State state = State::kNeedMore;
  std::size_t size = 0;       // kComplete: bytes of the request
  std::uint64_t body = 0;     // bytes of body declared or received so far (for the memory budget)
  std::size_t head = 0;       // bytes of the head with its blank line, once it is complete
  bool length_known = false;     // `body` is the Content-Length (not chunked bytes so far)
  bool expect_continue = false;  // the head asks for "100 Continue" before the body is sent
};

// `data` starts at the first byte of a request. Heads over `max_head` bytes and bodies over
// `max_body` bytes are kRefuse.
Framing scan_request(std::string_view data, std::size_t max_head, std::uint64_t max_body);

}  // namespace mailrelay
