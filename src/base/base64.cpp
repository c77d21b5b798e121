#include "base64.h"

#include <array>
#include <cstdint>

namespace mailrelay {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> make_reverse() {
  std::array<int8_t, 256> table{};
  for (auto& v : table) v = -1;
  for (int i = 0; i < 64; ++i) table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return table;
}
constexpr auto kReverse = make_reverse();

std::string encode(std::string_view bytes, std::size_t line_length) {
  std::string out;
  std::size_t encoded = (bytes.size() + 2) / 3 * 4;
  out.reserve(encoded + (line_length ? encoded / line_length * 2 + 2 : 0));
  std::size_t column = 0;
  auto put = [&](char c) {
    if (line_length && column == line_length) {
      out += "\r\n";
      column = 0;
    }
    out += c;
    ++column;
  };
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                 uint8_t(bytes[i + 2]);
    put(kAlphabet[(n >> 18) & 63]);
    put(kAlphabet[(n >> 12) & 63]);
    put(kAlphabet[(n >> 6) & 63]);
    put(kAlphabet[n & 63]);
  }
  std::size_t rest = bytes.size() - i;
  if (rest) {
    uint32_t n = uint32_t(uint8_t(bytes[i])) << 16;
    if (rest == 2) n |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    put(kAlphabet[(n >> 18) & 63]);
    put(kAlphabet[(n >> 12) & 63]);
    put(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    put('=');
  }
  return out;
}

}  // namespace

std::string base64_encode(std::string_view bytes) { return encode(bytes, 0); }

std::string base64_encode_mime(std::string_view bytes) { return encode(bytes, 76); }

std::optional<std::string> base64_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t buffer = 0;
  int quantum = 0;   // sextets in the current 4-character group
  int padding = 0;   // '=' seen; only legal at the very end
  for (char c : text) {
    if (c == '\r' || c == '\n') continue;
    if (c == '=') {
      if (quantum < 2 || ++padding > 2) return std::nullopt;
      continue;
    }
    if (padding) return std::nullopt;  // data after padding
    int8_t v = kReverse[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | uint32_t(v);
    if (++quantum == 4) {
      out += char((buffer >> 16) & 0xFF);
      out += char((buffer >> 8) & 0xFF);
      out += char(buffer & 0xFF);
      buffer = 0;
      quantum = 0;
    }
  }
  if (padding) {
    if (quantum + padding != 4) return std::nullopt;
    if (quantum == 2) {
      out += char((buffer >> 4) & 0xFF);
    } else {  // quantum == 3
      out += char((buffer >> 10) & 0xFF);
      out += char((buffer >> 2) & 0xFF);
    }
  } else if (quantum != 0) {
    return std::nullopt;  // unpadded input
  }
  return out;
}

}  // namespace mailrelay
