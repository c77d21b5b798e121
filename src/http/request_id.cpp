#include "request_id.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <random>

namespace mailrelay {

bool is_acceptable_request_id(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' || c == '-';
  });
}

std::string new_request_id() {
  static const char* kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  thread_local std::mt19937_64 engine{std::random_device{}()};
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  std::string id(26, '0');
  for (int i = 9; i >= 0; --i) {  // 48-bit timestamp in 10 characters
    id[i] = kCrockford[ms & 31];
    ms >>= 5;
  }
  uint64_t hi = engine(), lo = engine();  // 80 random bits in 16 characters
  for (int i = 10; i < 26; ++i) {
    uint64_t& src = i < 18 ? hi : lo;
    id[i] = kCrockford[src & 31];
    src >>= 5;
  }
  return id;
}

}  // namespace mailrelay
