// Request framing: the one HTTP/1.1 parser of the daemon (RFC 9112, strictly). It decides where a
// request's head ends, what the head says, and where a chunked body ends; nothing else reads the
// same bytes again, and no byte is rewritten. Whatever it refuses is answered 400 (414 for a
// request line that is too long, 413 for a body over its limit) and the connection closed: a
// refused request is never executed. Pure; thread-compatible. Every function here sees untrusted
// bytes (tests/fuzz/framing_fuzzer.cpp), and tests/differential/ holds it to Node's llhttp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <httplib.h>

namespace mailrelay {

// A request line longer than this is answered 414; a head longer than the limit given, 400.
inline constexpr std::size_t kMaxRequestLine = 8192;

// Why a request was refused by the framing (and so never executed).
struct FramingError {
  int status = 400;     // 400, 413 (chunked body over its limit) or 414 (request line too long)
  std::string message;  // for the client: what was wrong, never the bytes themselves
};

// What the head of a request says.
struct RequestHead {
  std::string method, target;
  int minor_version = 1;  // HTTP/1.<minor_version>: 0 or 1
  httplib::Headers fields;  // as sent: names and values untouched but for the optional whitespace
  bool keep_alive = true;   // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with keep-alive
  bool chunked = false;
  std::optional<std::uint64_t> content_length;
  bool expect_continue = false;  // "Expect: 100-continue"
  bool has_body() const { return chunked || content_length.value_or(0) > 0; }
};

// How far find_head_end has looked: bytes arriving one at a time are each looked at once.
struct HeadScan {
  std::size_t pos = 0;         // bytes looked at
  std::size_t line_start = 0;  // where the line being looked at starts
};

// Looks for the end of a head in `data` (which starts with a request line: empty lines a client
// sent between requests are skipped before) from where `scan` stopped. Returns the head's size
// with its blank line once it is whole; 0 while it is not (and `scan` moves on); nullopt with `error` set when it cannot be a head: a bare LF or a NUL
// (refused at once, without waiting for more), a request line over kMaxRequestLine, or a head over
// `max_head`.
std::optional<std::size_t> find_head_end(std::string_view data, HeadScan& scan, std::size_t max_head,
                                         FramingError& error);

// Empty lines (CRLF) before a request line, which RFC 9112 section 2.2 asks a server to skip.
std::size_t leading_empty_lines(std::string_view data);

// Parses a whole head (from find_head_end). False with `error` set for anything RFC 9112 does not
// allow: a bad method token or target, a version other than HTTP/1.0 or HTTP/1.1, obs-fold, a
// space before a colon, CR, LF, NUL or another control character inside a value, an HTTP/1.1
// request without exactly one Host, a Content-Length that is not one number, a
// Transfer-Encoding other than "chunked" once, or both.
bool parse_head(std::string_view head, RequestHead& out, FramingError& error);

// A chunked body (RFC 9112 section 7.1), decoded as its bytes arrive. Strict: a chunk size is 1 to
// 16 hex digits with nothing before it (no sign, no "0x", no space), a chunk extension holds no
// control character, the chunk data is followed by CRLF and nothing else, trailer fields are field
// lines as in a head, and every line ends in CRLF.
class ChunkedDecoder {
 public:
  enum class Result { kNeedMore, kDone, kError };
  // Decodes from `data` (advancing `pos` past what it used) and appends chunk data to `body`;
  // kDone once the last chunk and the trailer section are read (`pos` then ends the request).
  // kError with error() set: a syntax error, or a body over `max_body` (413).
  Result feed(std::string_view data, std::size_t& pos, std::string& body, std::uint64_t max_body);
  const FramingError& error() const { return error_; }

 private:
  enum class State { kSize, kExtension, kSizeLf, kData, kDataCr, kDataLf, kTrailer, kTrailerLf, kDone };
  Result fail(std::string message, int status = 400);
  State state_ = State::kSize;
  std::uint64_t size_ = 0;        // of the chunk being read: its size, then what is left of it
  std::size_t digits_ = 0;
  std::size_t line_bytes_ = 0;    // of the current size line or trailer section (bounded)
  std::string trailer_line_;
  FramingError error_;
};

// The HTTP/1.1 answer for `res`: status line, its fields, Content-Length, and Connection: close
// or Keep-Alive with our limits (`keep_alive_seconds`, `keep_alive_max` more requests). For HEAD
// (`head_only`) the body is left out and its length still said.
std::string serialize_response(const httplib::Response& res, bool head_only, bool close, long keep_alive_seconds,
                               std::size_t keep_alive_max);

}  // namespace mailrelay
