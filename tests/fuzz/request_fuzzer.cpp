// libFuzzer target: request parsing and validation, then translation for every provider, on
// arbitrary bytes. Besides crashes and sanitizer reports, it checks two properties that would be
// security bugs: the .eml is 7-bit clean, and its header block is only well-formed field lines
// (no input can smuggle a header or end the headers early).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "email.h"
#include "mailgun_provider.h"
#include "mime.h"
#include "sendgrid_provider.h"

namespace {

void check_headers(const std::string& eml) {
  std::size_t end = eml.find("\r\n\r\n");
  if (end == std::string::npos) std::abort();
  std::size_t start = 0;
  while (start < end) {
    std::size_t nl = eml.find("\r\n", start);
    std::string_view line(eml.data() + start, nl - start);
    start = nl + 2;
    if (line.empty()) std::abort();
    if (line[0] == ' ') continue;  // folded continuation
    std::size_t colon = line.find(": ");
    if (colon == std::string_view::npos || colon == 0) std::abort();
    for (char c : line.substr(0, colon)) {
      if (c < 33 || c > 126 || c == ':') std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  mailrelay::SendGridProvider sendgrid("https://api.sendgrid.com", "SG.fuzz");
  mailrelay::MailgunProvider mailgun("https://api.mailgun.net", "mg.example.com", "fuzz");
  static const mailrelay::MessageLimits limits =
      mailrelay::MessageLimits::relay().tighten(sendgrid.limits()).tighten(mailgun.limits());
  auto email = mailrelay::parse_email(body, size > 0 && (data[0] & 1) ? limits : mailrelay::MessageLimits::relay());
  if (!email) return 0;
  (void)sendgrid.build_request(email.value(), "fuzz-1");
  (void)mailgun.build_request(email.value(), "fuzz-1");
  std::string eml = mailrelay::render_eml(email.value(), "<fuzz@example.com>",
                                          std::chrono::system_clock::from_time_t(1795381086), "fuzz");
  for (char c : eml) {
    if (static_cast<unsigned char>(c) >= 128) std::abort();
  }
  check_headers(eml);
  return 0;
}
