// Hashing for every layer: SHA-256 and HMAC-SHA256 (OpenSSL), and lower-case hex. Pure;
// thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace mailrelay {

// Lower-case hex of `bytes`.
std::string hex_lower(std::string_view bytes);

// Lower-case hex SHA-256 of `data` (SigV4 payload hashes, idempotency digests, replay keys).
std::string sha256_hex(std::string_view data);

// HMAC-SHA256 of `data` under `key`: the 32 raw bytes (SigV4 chains them) or their hex (recipient
// hashes, Mailgun webhook signatures, forwarded batches).
std::string hmac_sha256(std::string_view key, std::string_view data);
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

}  // namespace mailrelay
