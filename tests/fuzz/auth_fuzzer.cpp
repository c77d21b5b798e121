// libFuzzer target: credentials as callers send them: Basic auth (Postmark's webhooks) and the
// base64 under it. Checks that only the exact credentials are accepted.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base64.h"
#include "delivery_events.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kCredentials = "postmark:fake-webhook-password";
  if (mailrelay::verify_basic_auth(kCredentials, input)) {
    auto decoded = mailrelay::base64_decode(input.substr(6));
    if (!decoded || *decoded != kCredentials) std::abort();
  }
  auto decoded = mailrelay::base64_decode(input);
  if (decoded && mailrelay::base64_decode(mailrelay::base64_encode(*decoded)) != decoded) std::abort();
  return 0;
}
