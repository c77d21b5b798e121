// Base64 (RFC 4648, standard alphabet, padded). Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailrelay {

std::string base64_encode(std::string_view bytes);

// Like base64_encode, with CRLF after every 76 output characters (MIME, RFC 2045 6.8).
std::string base64_encode_mime(std::string_view bytes);

// Strict decoding: standard alphabet, correct padding; CR and LF are skipped (MIME line breaks).
// Anything else (URL-safe alphabet, missing padding, stray characters) yields nullopt.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace mailrelay
