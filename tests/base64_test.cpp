#include <catch2/catch.hpp>

#include "base64.h"

using namespace mailrelay;

TEST_CASE("base64 round-trips every length and byte", "[base64]") {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes += static_cast<char>(i * 37 % 256);
    auto decoded = base64_decode(base64_encode(bytes));
    REQUIRE(decoded);
    REQUIRE(*decoded == bytes);
    REQUIRE(*base64_decode(base64_encode_mime(bytes)) == bytes);
  }
}

TEST_CASE("base64 known vectors (RFC 4648 section 10)", "[base64]") {
  auto [plain, encoded] = GENERATE(table<std::string, std::string>({
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}}));
  CHECK(base64_encode(plain) == encoded);
  CHECK(base64_decode(encoded) == plain);
}

TEST_CASE("base64 decoding is strict", "[base64]") {
  auto bad = GENERATE(as<std::string>{}, "Zg", "Zg=", "Z===", "Zm9v!", "Zm9v-_", "Zg==Zg==", "=Zg=", "Zm 9v");
  CAPTURE(bad);
  CHECK_FALSE(base64_decode(bad));
}

TEST_CASE("base64 MIME output wraps at 76 with CRLF, and decoding skips line breaks", "[base64]") {
  std::string bytes(200, 'x');
  std::string mime = base64_encode_mime(bytes);
  CHECK(mime.find("\r\n") == 76);
  CHECK(base64_decode("Zm9v\r\nYmFy") == std::string("foobar"));
}
