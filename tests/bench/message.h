// The framing of an HTTP/1.1 message at the start of a buffer, as much as the bench tools need:
// Content-Length or chunked, and Connection: close. The fake provider reads requests with it,
// the load client responses.
#pragma once

#include <cctype>
#include <cstdlib>
#include <string>

namespace bench {

// Length of the complete message at the start of `in` (head and body), 0 while incomplete.
// `close` tells whether it says Connection: close.
inline std::size_t complete_message(const std::string& in, bool& close) {
  std::size_t head_end = in.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  std::string head = in.substr(0, head_end + 2);
  for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  close = head.find("\r\nconnection: close\r\n") != std::string::npos;
  std::size_t body = head_end + 4;
  if (head.find("\r\ntransfer-encoding: chunked\r\n") != std::string::npos) {
    std::size_t at = body;
    for (;;) {
      std::size_t eol = in.find("\r\n", at);
      if (eol == std::string::npos) return 0;
      std::size_t size = std::strtoul(in.c_str() + at, nullptr, 16);
      at = eol + 2 + size + 2;
      if (at > in.size()) return 0;
      if (size == 0) return at;
    }
  }
  std::size_t cl = head.find("\r\ncontent-length:");
  std::size_t length = cl == std::string::npos ? 0 : std::strtoul(head.c_str() + cl + 17, nullptr, 10);
  return in.size() >= body + length ? body + length : 0;
}

}  // namespace bench
