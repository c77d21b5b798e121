#include "request_framing.h"

#include <algorithm>
#include <cstring>

#include "ascii.h"

namespace mailrelay {
namespace {

// RFC 9110 section 5.6.2: tchar.
bool is_tchar(unsigned char c) {
  return std::isalnum(c) || (c < 0x80 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0);
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// RFC 9110 section 5.5: field-vchar (VCHAR, obs-text), SP and HTAB; nothing else, so no CR, LF,
// NUL or DEL.
bool is_field_value(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c != '\t' && (c < 0x20 || c == 0x7f)) return false;
  }
  return true;
}

bool parse_decimal(std::string_view text, std::uint64_t& out) {
  if (text.empty() || text.size() > 18) return false;
  out = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

// One field line (without its CRLF): its name and value (optional whitespace trimmed), or false
// with the reason.
bool parse_field_line(std::string_view line, std::string_view& name, std::string_view& value, std::string& why) {
  if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
    why = "a header line starts with whitespace (obs-fold is not accepted)";
    return false;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    why = "a header line has no colon";
    return false;
  }
  name = line.substr(0, colon);
  if (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
    why = "whitespace between a header name and its colon";
    return false;
  }
  if (!is_token(name)) {
    why = "a header name is not a token";
    return false;
  }
  value = trim_blanks(line.substr(colon + 1));
  if (!is_field_value(value)) {
    why = "a header value holds CR, LF, NUL or another control character";
    return false;
  }
  return true;
}

// The request target: origin-form, "*", or absolute-form (RFC 9112 section 3.2), visible ASCII.
bool is_target(std::string_view t) {
  if (t.empty()) return false;
  for (char ch : t) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  if (t.front() == '/' || t == "*") return true;
  const std::size_t scheme = t.find("://");
  return scheme != std::string_view::npos && scheme > 0 && is_token(t.substr(0, scheme));
}

}  // namespace

std::size_t leading_empty_lines(std::string_view data) {
  std::size_t at = 0;
  while (data.substr(at, 2) == "\r\n") at += 2;
  return at;
}

std::optional<std::size_t> find_head_end(std::string_view data, HeadScan& scan, std::size_t max_head,
                                         FramingError& error) {
  std::size_t pos = scan.pos;
  std::size_t line_start = scan.line_start;
  while (pos < data.size()) {
    const void* nl = std::memchr(data.data() + pos, '\n', data.size() - pos);
    const std::size_t end = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - data.data()) : data.size();
    // A verdict must not depend on how the bytes were split into reads: of a NUL and a line too
    // long, the one a shorter prefix of the stream shows wins.
    const std::size_t limit = line_start == 0 ? std::min(kMaxRequestLine, max_head) : max_head;
    const void* nul = std::memchr(data.data() + pos, '\0', end - pos);
    const std::size_t nul_at = nul ? static_cast<std::size_t>(static_cast<const char*>(nul) - data.data()) : end;
    if (nul && nul_at <= limit) {
      error = {400, "the request head holds a NUL byte"};
      return std::nullopt;
    }
    if (end > limit) {
      error = line_start == 0 && limit == kMaxRequestLine
                  ? FramingError{414, "the request line is longer than " + std::to_string(kMaxRequestLine) + " bytes"}
                  : FramingError{400, "the request head is larger than " + std::to_string(max_head) + " bytes"};
      return std::nullopt;
    }
    if (!nl) {
      pos = data.size();
      break;
    }
    if (end == line_start || data[end - 1] != '\r') {
      error = {400, "a line of the request head ends in a bare LF (CRLF required)"};
      return std::nullopt;
    }
    if (end == line_start + 1 && line_start > 0) return end + 1;  // the blank line
    pos = line_start = end + 1;
  }
  scan = {pos, line_start};
  return 0;
}

bool parse_head(std::string_view head, RequestHead& out, FramingError& error) {
  auto fail = [&error](std::string message) {
    error = {400, std::move(message)};
    return false;
  };
  std::size_t at = 0;
  auto next_line = [&head, &at](std::string_view& line) {
    const std::size_t nl = head.find('\n', at);
    if (nl == std::string_view::npos || nl == at || head[nl - 1] != '\r') return false;
    line = head.substr(at, nl - 1 - at);
    at = nl + 1;
    return true;
  };
  std::string_view line;
  if (!next_line(line)) return fail("the request line does not end in CRLF");
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return fail("the request line is not: method, one space, target, one space, version");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return fail("the method is not a token");
  if (!is_target(target)) return fail("the request target is not a path (visible ASCII, starting with /)");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return fail("the version is not HTTP/1.1 or HTTP/1.0");
  out.method.assign(method);
  out.target.assign(target);
  out.minor_version = version.back() - '0';
  int hosts = 0, lengths = 0, codings = 0;
  bool close = false, keep_alive = false;
  std::string why;
  for (;;) {
    if (!next_line(line)) return fail("a header line does not end in CRLF");
    if (line.empty()) break;
    std::string_view name, value;
    if (!parse_field_line(line, name, value, why)) return fail(why);
    if (iequals(name, "Host")) {
      ++hosts;
    } else if (iequals(name, "Content-Length")) {
      std::uint64_t length = 0;
      if (++lengths > 1) return fail("more than one Content-Length");
      if (!parse_decimal(value, length)) return fail("Content-Length is not a number");
      out.content_length = length;
    } else if (iequals(name, "Transfer-Encoding")) {
      if (++codings > 1 || !iequals(value, "chunked")) return fail("Transfer-Encoding must be chunked, once");
      out.chunked = true;
    } else if (iequals(name, "Connection")) {
      for (std::size_t from = 0; from <= value.size();) {
        std::size_t comma = value.find(',', from);
        if (comma == std::string_view::npos) comma = value.size();
        const std::string_view token = trim_blanks(value.substr(from, comma - from));
        close = close || iequals(token, "close");
        keep_alive = keep_alive || iequals(token, "keep-alive");
        from = comma + 1;
      }
    } else if (iequals(name, "Expect")) {
      out.expect_continue = iequals(value, "100-continue");
    }
    out.fields.emplace(std::string(name), std::string(value));
  }
  if (at != head.size()) return fail("bytes after the end of the request head");
  if (out.chunked && lengths > 0) return fail("Content-Length and Transfer-Encoding together");
  if (out.chunked && out.minor_version == 0) return fail("Transfer-Encoding in an HTTP/1.0 request");
  if (out.minor_version == 1 ? hosts != 1 : hosts > 1) return fail("an HTTP/1.1 request needs exactly one Host header");
  out.keep_alive = !close && (out.minor_version == 1 || keep_alive);
  return true;
}

ChunkedDecoder::Result ChunkedDecoder::fail(std::string message, int status) {
  error_ = {status, std::move(message)};
  return Result::kError;
}

ChunkedDecoder::Result ChunkedDecoder::feed(std::string_view data, std::size_t& pos, std::string& body,
                                            std::uint64_t max_body) {
  constexpr std::size_t kMaxLine = 4096;      // a chunk size line with its extensions
  constexpr std::size_t kMaxTrailers = 8192;  // the whole trailer section
  while (pos < data.size()) {
    const auto c = static_cast<unsigned char>(data[pos]);
    switch (state_) {
      case State::kSize: {
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit >= 0) {
          if (++digits_ > 16) return fail("a chunk size has more than 16 hex digits");
          size_ = size_ * 16 + static_cast<std::uint64_t>(digit);
        } else if (digits_ > 0 && c == ';') {
          state_ = State::kExtension;
        } else if (digits_ > 0 && c == '\r') {
          state_ = State::kSizeLf;
        } else {
          return fail("a chunk size is not 1 to 16 hex digits");
        }
        ++pos;
        break;
      }
      case State::kExtension:
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
          return fail("a chunk extension holds LF, NUL or another control character");
        } else if (++line_bytes_ > kMaxLine) {
          return fail("a chunk extension is longer than 4096 bytes");
        }
        ++pos;
        break;
      case State::kSizeLf:
        if (c != '\n') return fail("a chunk size line does not end in CRLF");
        ++pos;
        line_bytes_ = 0;
        state_ = size_ == 0 ? State::kTrailer : State::kData;
        if (size_ > max_body || body.size() + size_ > max_body) {
          return fail("request body is larger than " + std::to_string(max_body) + " bytes", 413);
        }
        break;
      case State::kData: {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size_, data.size() - pos));
        body.append(data.data() + pos, n);
        pos += n;
        size_ -= n;
        if (size_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') return fail("bytes after a chunk's data (CRLF expected)");
        ++pos;
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return fail("bytes after a chunk's data (CRLF expected)");
        ++pos;
        size_ = digits_ = 0;
        state_ = State::kSize;
        break;
      case State::kTrailer:
        // A trailer field line, or the empty line that ends the body.
        if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (c == '\n') {
          return fail("a trailer line ends in a bare LF");
        } else {
          trailer_line_ += static_cast<char>(c);
        }
        if (++line_bytes_ > kMaxTrailers) return fail("the trailer section is longer than 8192 bytes");
        ++pos;
        break;
      case State::kTrailerLf: {
        if (c != '\n') return fail("a trailer line does not end in CRLF");
        ++pos;
        if (trailer_line_.empty()) {
          state_ = State::kDone;
          return Result::kDone;
        }
        std::string_view name, value;
        std::string why;
        if (!parse_field_line(trailer_line_, name, value, why)) return fail("trailer: " + why);
        trailer_line_.clear();
        state_ = State::kTrailer;
        break;
      }
      case State::kDone:
        return Result::kDone;
    }
  }
  return state_ == State::kDone ? Result::kDone : Result::kNeedMore;
}

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 207: return "Multi-Status";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

}  // namespace

std::string serialize_response(const httplib::Response& res, bool head_only, bool close, long keep_alive_seconds,
                               std::size_t keep_alive_max) {
  std::string out;
  out.reserve(256 + (head_only ? 0 : res.body.size()));
  out += "HTTP/1.1 ";
  out += std::to_string(res.status);
  out += ' ';
  out += reason_phrase(res.status);
  out += "\r\n";
  for (const auto& [name, value] : res.headers) {
    if (iequals(name, "Connection") || iequals(name, "Content-Length") || iequals(name, "Keep-Alive")) continue;
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (close) {
    out += "Connection: close\r\n";
  } else {
    out += "Keep-Alive: timeout=" + std::to_string(keep_alive_seconds) + ", max=" + std::to_string(keep_alive_max) + "\r\n";
  }
  out += "Content-Length: ";
  out += std::to_string(res.body.size());
  out += "\r\n\r\n";
  if (!head_only) out += res.body;
  return out;
}

}  // namespace mailrelay
