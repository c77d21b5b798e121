// libFuzzer target: the bytes a client sends before anything else reads them (README "Hostile input"): request
// framing (scan_request), the raw header lines (parse_raw_headers) and the Range scrub
// (hide_range), the stand-in for methods cpp-httplib does not parse (stand_in_method) and the
// Keep-Alive strip of an answer's head (without_header_line). Besides crashes and sanitizer reports it checks that framing never claims more
// bytes than arrived, and that no Range header survives the scrub.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ascii.h"
#include "request_framing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  const mailrelay::Framing f = mailrelay::scan_request(bytes, 64 * 1024, 1 << 20);
  if (f.state == mailrelay::Framing::State::kComplete && (f.size > size || f.head > f.size)) std::abort();
  if (f.head > size) std::abort();
  mailrelay::hide_range(bytes, bytes.data());
  if (bytes.size() != size) std::abort();
  httplib::Headers headers;
  if (mailrelay::parse_raw_headers(bytes, headers)) {
    for (const auto& [name, value] : headers) {
      if (name.empty()) std::abort();
      if (mailrelay::iequals(name, "range") && bytes.find("\r\n\r\n") != std::string::npos) std::abort();
    }
  }
  // A stand-in keeps the request's end on the same byte: the method is all that changes.
  std::string copy(reinterpret_cast<const char*>(data), size);
  std::size_t end = size;
  const std::string method = mailrelay::stand_in_method(copy, end);
  if (end != copy.size() || (!method.empty() && copy.compare(0, 6, "TRACE ") != 0)) std::abort();
  if (mailrelay::without_header_line(bytes, "Keep-Alive").size() > bytes.size()) std::abort();
  return 0;
}
