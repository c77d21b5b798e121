#include <catch2/catch.hpp>

#include "token_store.h"

using namespace mailrelay;

TEST_CASE("token file: comments, blanks and CRLF are fine and each token maps to its client", "[token_store]") {
  auto store = TokenStore::parse("# clients\n\nbilling:billing-token-0123456789\r\nshop:shop%token:with-colon-42\n");
  REQUIRE(store);
  CHECK(store.value().size() == 2);
  CHECK(store.value().authenticate("Bearer billing-token-0123456789") == std::string("billing"));
  CHECK(store.value().authenticate("bearer shop%token:with-colon-42") == std::string("shop"));
}

TEST_CASE("token authentication refuses anything but an exact bearer token", "[token_store]") {
  auto store = TokenStore::parse("billing:billing-token-0123456789\n").value();
  auto header = GENERATE(as<std::string>{}, "", "Bearer", "Bearer ", "Basic billing-token-0123456789",
                         "Bearer billing-token-012345678", "Bearer billing-token-01234567890",
                         "Bearer  billing-token-0123456789", "billing-token-0123456789");
  CAPTURE(header);
  CHECK_FALSE(store.authenticate(header));
}

TEST_CASE("malformed token files are refused with the line number and without the token", "[token_store]") {
  auto [text, message] = GENERATE(table<std::string, std::string>({
      {"no-colon-here-at-all\n", "line 1: expected name:token"},
      {"ok:0123456789abcdef\n:0123456789abcdef\n", "line 2: expected name:token"},
      {"bad name:0123456789abcdef\n", "line 1: client name"},
      {"short:abc\n", "line 1: token shorter than 16"},
      {"ops:0123456789abcdef:admn\n", "line 1: unknown scope 'admn' (scopes: send, admin)"},
      {"a:0123456789abcdef\n\nb:0123456789abcdef:admin\n", "line 3: the same token as line 1"},
      {std::string(65, 'n') + ":0123456789abcdef\n", "line 1: client name longer than 64"},
      {"# only comments\n", "no tokens found"}}));
  auto store = TokenStore::parse(text);
  REQUIRE_FALSE(store);
  CHECK_THAT(store.error().message, Catch::Contains(message));
  CHECK_THAT(store.error().message, !Catch::Contains("0123456789abcdef"));
}

TEST_CASE("token scopes: name:token is send, a trailing :send,admin list sets them", "[token_store][control]") {
  auto store = TokenStore::parse(
      "billing:billing-token-0123456789\n"
      "ops:ops-token-0123456789abcd:admin\n"
      "both:both-token-0123456789ab:send,admin\n"
      "colon:colon-token:0123456789:Not-A-Scope\n").value();
  auto scopes = [&](const std::string& token) { return store.identify("Bearer " + token).value().scopes; };
  CHECK(scopes("billing-token-0123456789") == kScopeSend);
  CHECK(scopes("ops-token-0123456789abcd") == kScopeAdmin);
  CHECK(scopes("both-token-0123456789ab") == (kScopeSend | kScopeAdmin));
  // A last part that is not lower-case words is part of the token (lower-case words are scopes).
  CHECK(scopes("colon-token:0123456789:Not-A-Scope") == kScopeSend);
  CHECK_FALSE(store.identify("Bearer ops-token-0123456789abcd:admin"));
  CHECK(store.identify("Bearer ops-token-0123456789abcd").value().name == "ops");
  // The scope list does not count towards the token's 16 characters.
  CHECK_FALSE(TokenStore::parse("ops:short-token:admin\n"));
}
