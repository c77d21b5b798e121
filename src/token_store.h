// TokenStore: client bearer tokens from a `name:token` file (SPEC section 5), kept only as
// SHA-256 digests and compared in constant time. Immutable after load; thread-safe.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace mailrelay {

class TokenStore {
 public:
  // Lines are `name:token`; blank lines and lines starting with '#' are skipped. Errors name the
  // line number, never the token.
  static Result<TokenStore> load(const std::string& path);
  static Result<TokenStore> parse(std::string_view text);

  // The client name for an `Authorization` header value ("Bearer <token>"), or nullopt.
  std::optional<std::string> authenticate(std::string_view authorization) const;
  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string name;
    std::array<unsigned char, 32> digest;
  };
  std::vector<Entry> entries_;
};

}  // namespace mailrelay
