// libFuzzer target: the daemon's one HTTP/1.1 parser (request_framing.h), on the bytes a client
// sends before anything else reads them (README "The front door"). Besides crashes and sanitizer
// reports it checks what the parser promises:
// - a head it accepts has a token method, a target of visible ASCII, and no CR, LF, NUL or other
//   control character in any field name or value;
// - where a request ends does not depend on how its bytes were split into reads: the input fed
//   whole and fed in two pieces (split where its first byte says) gives the same verdict, the same
//   head size, the same body and the same end;
// - nothing is claimed past the bytes given, and no decoded body exceeds its limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "framing_driver.h"
#include "request_framing.h"

namespace {

void check_head(const mailrelay::RequestHead& head) {
  if (head.method.empty() || head.target.empty()) std::abort();
  for (unsigned char c : head.target) {
    if (c <= 0x20 || c >= 0x7f) std::abort();
  }
  for (const auto& [name, value] : head.fields) {
    if (name.empty()) std::abort();
    for (unsigned char c : name + value) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) std::abort();
    }
  }
  if (head.chunked && head.content_length) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const fakes::Framed whole = fakes::frame(bytes);
  if (whole.verdict == 1 && whole.end > size) std::abort();
  if (whole.verdict == 1) check_head(whole.head);
  const std::size_t split = size == 0 ? 0 : data[0] % (size + 1);
  if (!(fakes::frame(bytes, split) == whole)) std::abort();
  return 0;
}
