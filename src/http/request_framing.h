// Request framing: decides from the bytes received so far whether an HTTP/1.1 request is
// complete, so that a request gets a fiber only when it is whole in memory (a slow client costs
// a buffer, never a fiber); reads a head's header lines as sent. Pure;
// thread-compatible. Every function here sees untrusted bytes (tests/fuzz/framing_fuzzer.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <httplib.h>

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

// The header lines of a raw request head (request line, fields, blank line), values trimmed of
// optional whitespace and otherwise untouched. False for anything RFC 9112 does not allow
// (obs-fold, a bad field name, no blank line).
bool parse_raw_headers(std::string_view head, httplib::Headers& out);

// cpp-httplib 0.11.4 parses a Range header with std::regex_match before any hook of ours runs,
// and libstdc++'s regex executor recurses once per character: a long value would exhaust the
// stack. Nothing here serves ranges, so every Range header line in the head of `request` (its
// bytes, at `data`, writable) is renamed in place to "X-Ign" (same length) and never reaches it.
void hide_range(std::string_view request, char* data);

// `head` without its `name` header lines (case-insensitive), the rest byte for byte.
std::string without_header_line(std::string_view head, std::string_view name);

// When the request at the start of `in` (ending at `request_end`) names a method cpp-httplib
// 0.11.4 does not parse (anything but GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PRI)
// and that method is an RFC 9110 token, replaces it with "TRACE" in place (moving
// `request_end`) and returns it; otherwise changes nothing and returns "".
std::string stand_in_method(std::string& in, std::size_t& request_end);

}  // namespace mailrelay
