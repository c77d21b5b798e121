#include "request_framing.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

#include "ascii.h"

namespace mailrelay {
namespace {

using State = Framing::State;

Framing refuse() { return Framing{State::kRefuse, 0, 0, 0, false, false}; }

bool parse_decimal(std::string_view text, std::uint64_t& out) {
  if (text.empty() || text.size() > 18) return false;
  out = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

// The end of a chunked body starting at `from`: kComplete with its end, kNeedMore, or kRefuse
// for bad chunk syntax or a body over `max_body` (the handler then answers 400 or 413).
Framing scan_chunked(std::string_view data, std::size_t from, std::uint64_t max_body) {
  std::uint64_t body = 0;
  std::size_t pos = from;
  for (;;) {
    std::size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) return data.size() - pos > 1024 ? refuse() : Framing{State::kNeedMore, 0, body, 0, false, false};
    std::string_view line = data.substr(pos, eol - pos);
    line = line.substr(0, line.find(';'));  // chunk extensions
    line = trim_blanks(line);
    if (line.empty() || line.size() > 15) return refuse();
    std::uint64_t size = 0;
    for (char c : line) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return refuse();
      size = size * 16 + static_cast<std::uint64_t>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10));
    }
    body += size;
    if (body > max_body) return refuse();
    pos = eol + 2;
    if (size == 0) {
      // Trailer fields, then the blank line.
      for (;;) {
        std::size_t end = data.find("\r\n", pos);
        if (end == std::string_view::npos) return data.size() - pos > 8192 ? refuse() : Framing{State::kNeedMore, 0, body, 0, false, false};
        if (end == pos) return Framing{State::kComplete, end + 2, body, 0, false, false};
        pos = end + 2;
      }
    }
    if (data.size() < pos + size + 2) return Framing{State::kNeedMore, 0, body, 0, false, false};
    if (data.substr(pos + size, 2) != "\r\n") return refuse();
    pos += size + 2;
  }
}

}  // namespace

Framing scan_request(std::string_view data, std::size_t max_head, std::uint64_t max_body) {
  std::size_t head_end = data.find("\r\n\r\n");
  if (head_end == std::string_view::npos) return data.size() > max_head ? refuse() : Framing{};
  if (head_end + 4 > max_head) return refuse();
  const std::size_t body_start = head_end + 4;
  // The framing headers, as RFC 9112 section 6 reads them; anything doubtful is refused and the
  // handler says why from the head.
  int lengths = 0, codings = 0;
  bool expect_continue = false;
  std::uint64_t length = 0;
  bool chunked = false;
  std::size_t pos = data.find("\r\n");
  while (pos < head_end) {
    pos += 2;
    std::size_t end = data.find("\r\n", pos);
    std::string_view line = data.substr(pos, end - pos);
    std::size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view name = line.substr(0, colon);
      std::string_view value = trim_blanks(line.substr(colon + 1));
      if (iequals(name, "Content-Length")) {
        ++lengths;
        if (!parse_decimal(value, length)) return refuse();
      } else if (iequals(name, "Transfer-Encoding")) {
        ++codings;
        chunked = iequals(value, "chunked");
      } else if (iequals(name, "Expect")) {
        expect_continue = iequals(value, "100-continue");
      }
    }
    pos = end;
  }
  Framing out;
  if (codings > 0) {
    if (codings > 1 || lengths > 0 || !chunked) return refuse();
    out = scan_chunked(data, body_start, max_body);
  } else if (lengths > 1 || length > max_body) {
    return refuse();
  } else {
    out.body = length;
    out.length_known = true;
    if (data.size() >= body_start + length) {
      out.state = State::kComplete;
      out.size = static_cast<std::size_t>(body_start + length);
    }
  }
  out.head = body_start;
  out.expect_continue = expect_continue;
  return out;
}

namespace {

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

}  // namespace

bool parse_raw_headers(std::string_view head, httplib::Headers& out) {
  std::size_t pos = head.find("\r\n");
  if (pos == std::string_view::npos) return false;
  pos += 2;
  while (pos < head.size()) {
    std::size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) return false;
    if (end == pos) return true;  // the blank line ending the head
    std::size_t colon = head.find(':', pos);
    if (colon == std::string_view::npos || colon > end || colon == pos) return false;
    for (std::size_t i = pos; i < colon; ++i) {
      if (!is_token_char(head[i])) return false;
    }
    std::size_t value = colon + 1;
    std::size_t value_end = end;
    while (value < value_end && (head[value] == ' ' || head[value] == '\t')) ++value;
    while (value_end > value && (head[value_end - 1] == ' ' || head[value_end - 1] == '\t')) --value_end;
    out.emplace(std::string(head.substr(pos, colon - pos)), std::string(head.substr(value, value_end - value)));
    pos = end + 2;
  }
  return false;
}

void hide_range(std::string_view request, char* data) {
  // Lines as cpp-httplib splits them (at LF, with or without CR), up to the end of the head.
  const std::size_t head_end = std::min(request.find("\r\n\r\n"), request.size());
  for (std::size_t line = request.find('\n'); line != std::string_view::npos && line < head_end;
       line = request.find('\n', line)) {
    ++line;
    if (request.size() - line > 6 && request[line + 5] == ':' && iequals(request.substr(line, 5), "range")) {
      std::memcpy(data + line, "X-Ign", 5);
    }
  }
}

std::string without_header_line(std::string_view head, std::string_view name) {
  std::string out;
  out.reserve(head.size());
  std::size_t at = 0;
  while (at < head.size()) {
    std::size_t end = head.find("\r\n", at);
    end = end == std::string_view::npos ? head.size() : end + 2;
    const std::string_view line = head.substr(at, end - at);
    const bool named = line.size() > name.size() && line[name.size()] == ':' && iequals(line.substr(0, name.size()), name);
    if (!named) out.append(line);
    at = end;
  }
  return out;
}

std::string stand_in_method(std::string& in, std::size_t& request_end) {
  static constexpr std::string_view kKnown[] = {"GET", "HEAD", "POST", "PUT", "DELETE",
                                                "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI"};
  static constexpr std::string_view kTokenPunctuation = "!#$%&'*+-.^_`|~";
  const std::size_t space = std::string_view(in.data(), request_end).find(' ');
  if (space == std::string_view::npos || space == 0 || space > 32) return {};
  const std::string_view method(in.data(), space);
  for (std::string_view known : kKnown) {
    if (method == known) return {};
  }
  for (char c : method) {
    const bool tchar = std::isalnum(static_cast<unsigned char>(c)) || kTokenPunctuation.find(c) != std::string_view::npos;
    if (!tchar) return {};
  }
  std::string sent(method);
  in.replace(0, space, "TRACE");
  request_end = request_end - space + 5;
  return sent;
}

}  // namespace mailrelay
