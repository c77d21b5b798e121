// ASCII helpers for protocol text (header names, tokens): locale-independent.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace mailrelay {

// Equal ignoring ASCII case, as HTTP header names and tokens compare.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// A copy with ASCII letters lower-cased (addresses before they are hashed).
inline std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace mailrelay
