// TokenStore: client bearer tokens from a `name:token[:scopes]` file (README "API" and "Other endpoints"),
// kept only as SHA-256 digests and compared in constant time. Immutable after load; thread-safe.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace mailrelay {

// What a client may do: send mail (POST /v1/send), change providers at runtime (admin).
enum Scope : unsigned { kScopeSend = 1, kScopeAdmin = 2 };

struct Identity {
  std::string name;
  unsigned scopes = kScopeSend;
};

class TokenStore {
 public:
  // Lines are `name:token` (scope send) or `name:token:send,admin` (the scopes listed); blank
  // lines and lines starting with '#' are skipped. Errors name the line number, never the token.
  static Result<TokenStore> load(const std::string& path);
  static Result<TokenStore> parse(std::string_view text);

  // The client name for an `Authorization` header value ("Bearer <token>"), or nullopt.
  std::optional<std::string> authenticate(std::string_view authorization) const;
  // The same, with the client's scopes.
  std::optional<Identity> identify(std::string_view authorization) const;
  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Identity identity;
    std::array<unsigned char, 32> digest;
  };
  std::vector<Entry> entries_;
};

// Who is calling, or why not: the one rule for every route that takes a bearer token (README
// "Other endpoints"). Without a tokens file (`tokens` null: loopback only) every call is allowed.
struct Authorization {
  int status = 0;                     // 0: allowed; 401 (no or unknown token) or 403 (without the scope)
  std::string code, message;          // the API error when refused
  std::optional<std::string> client;  // the token's name; nullopt without a tokens file
  unsigned scopes = kScopeSend | kScopeAdmin;  // the token's scopes; all without a tokens file
};
// `scope` 0: any client's token will do.
Authorization authorize(const TokenStore* tokens, std::string_view authorization, unsigned scope);

}  // namespace mailrelay
