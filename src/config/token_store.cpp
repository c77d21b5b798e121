#include "token_store.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "message_limits.h"  // kMaxClientNameLength

namespace mailrelay {
namespace {

std::array<unsigned char, 32> sha256(std::string_view s) {
  std::array<unsigned char, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

}  // namespace

Result<TokenStore> TokenStore::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{"config", "cannot read tokens file " + path, ""};
  std::stringstream ss;
  ss << in.rdbuf();
  auto store = parse(ss.str());
  if (!store) return Error{"config", path + ": " + store.error().message, ""};
  return store;
}

Result<TokenStore> TokenStore::parse(std::string_view text) {
  TokenStore store;
  std::size_t line_no = 0;
  std::vector<std::size_t> lines;  // of each entry
  while (!text.empty()) {
    ++line_no;
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    std::size_t colon = line.find(':');
    std::string where = "line " + std::to_string(line_no);
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == line.size()) {
      return Error{"config", where + ": expected name:token", ""};
    }
    std::string_view name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
        })) {
      return Error{"config", where + ": client name may use A-Z a-z 0-9 - _ . only", ""};
    }
    if (name.size() > kMaxClientNameLength) {
      return Error{"config", where + ": client name longer than " + std::to_string(kMaxClientNameLength) + " characters", ""};
    }
    std::string_view token = line.substr(colon + 1);
    // `:send,admin` at the end is a scope list: lower-case words after the last colon are meant
    // as scopes, so a misspelt one is an error rather than a part of the token.
    Identity identity{std::string(name), kScopeSend};
    if (auto last = token.rfind(':'); last != std::string_view::npos) {
      std::string_view list = token.substr(last + 1);
      const bool words = !list.empty() && std::all_of(list.begin(), list.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || c == ',';
      });
      if (words) {
        identity.scopes = 0;
        while (!list.empty()) {
          std::string_view word = list.substr(0, list.find(','));
          list = word.size() == list.size() ? std::string_view() : list.substr(word.size() + 1);
          if (word == "send") identity.scopes |= kScopeSend;
          else if (word == "admin") identity.scopes |= kScopeAdmin;
          else return Error{"config", where + ": unknown scope '" + std::string(word) + "' (scopes: send, admin)", ""};
        }
        token = token.substr(0, last);
      }
    }
    if (token.size() < 16) return Error{"config", where + ": token shorter than 16 characters", ""};
    const auto digest = sha256(token);
    for (std::size_t i = 0; i < store.entries_.size(); ++i) {
      if (store.entries_[i].digest == digest) {
        return Error{"config", where + ": the same token as line " + std::to_string(lines[i]) +
                                   " (a token names one client)", ""};
      }
    }
    store.entries_.push_back({std::move(identity), digest});
    lines.push_back(line_no);
  }
  if (store.entries_.empty()) return Error{"config", "no tokens found", ""};
  return store;
}

std::optional<std::string> TokenStore::authenticate(std::string_view authorization) const {
  auto identity = identify(authorization);
  if (!identity) return std::nullopt;
  return identity->name;
}

std::optional<Identity> TokenStore::identify(std::string_view authorization) const {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return std::nullopt;
  }
  auto digest = sha256(authorization.substr(kScheme.size()));
  // Digests have a fixed length and every entry is compared, so timing reveals neither the token
  // nor which client matched.
  const Entry* match = nullptr;
  for (const auto& e : entries_) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) match = &e;
  }
  if (!match) return std::nullopt;
  return match->identity;
}

Authorization authorize(const TokenStore* tokens, std::string_view authorization, unsigned scope) {
  Authorization a;
  if (!tokens) return a;
  auto identity = tokens->identify(authorization);
  if (!identity) return Authorization{401, "unauthorized", "missing or unknown bearer token", std::nullopt, 0};
  a.client = identity->name;
  a.scopes = identity->scopes;
  if ((identity->scopes & scope) != scope) {
    a.status = 403;
    a.code = "forbidden";
    a.message = std::string("this token has no ") + (scope & kScopeAdmin ? "admin" : "send") + " scope";
  }
  return a;
}

}  // namespace mailrelay
