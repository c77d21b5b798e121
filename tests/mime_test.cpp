#include <catch2/catch.hpp>

#include "mime.h"

using namespace mailrelay;

TEST_CASE("quoted-printable", "[mime]") {
  CHECK(quoted_printable("plain text") == "plain text");
  CHECK(quoted_printable("a=b") == "a=3Db");
  CHECK(quoted_printable("line1\nline2\r\nline3") == "line1\r\nline2\r\nline3");
  CHECK(quoted_printable("trailing space \nx") == "trailing space=20\r\nx");
  CHECK(quoted_printable("é") == "=C3=A9");
  CHECK(quoted_printable(".dot first") == "=2Edot first");
  std::string long_line(200, 'a');
  std::string qp = quoted_printable(long_line);
  std::size_t start = 0;
  while (true) {
    std::size_t end = qp.find("\r\n", start);
    std::size_t len = (end == std::string::npos ? qp.size() : end) - start;
    CHECK(len <= 76);
    if (end == std::string::npos) break;
    start = end + 2;
  }
}

TEST_CASE("headers: ASCII stays readable, the rest becomes encoded-words on short lines", "[mime]") {
  CHECK(encode_header("Subject", "Your invoice") == "Subject: Your invoice\r\n");
  std::string encoded = encode_header("Subject", "Your invoice ✓");
  CHECK(encoded == "Subject: =?UTF-8?B?WW91ciBpbnZvaWNlIOKckw==?=\r\n");
  std::string long_utf8;
  for (int i = 0; i < 100; ++i) long_utf8 += "é";
  std::string folded = encode_header("Subject", long_utf8);
  CHECK(folded.find("\r\n ") != std::string::npos);
  for (char c : folded) CHECK(static_cast<unsigned char>(c) < 128);
}

TEST_CASE("address formatting quotes or encodes display names", "[mime]") {
  CHECK(format_address({"a@b.c", ""}) == "a@b.c");
  CHECK(format_address({"a@b.c", "Ann Lee"}) == "Ann Lee <a@b.c>");
  CHECK(format_address({"a@b.c", "Lee, Ann"}) == "\"Lee, Ann\" <a@b.c>");
  CHECK(format_address({"a@b.c", "Say \"hi\""}) == "\"Say \\\"hi\\\"\" <a@b.c>");
  CHECK(encode_address_header("To", {{"a@b.c", "Zoë"}, {"d@e.f", ""}}) ==
        "To: =?UTF-8?B?Wm/Dqw==?= <a@b.c>,\r\n d@e.f\r\n");
}

TEST_CASE("RFC 5322 date", "[mime]") {
  CHECK(rfc5322_date(std::chrono::system_clock::from_time_t(1795381086)) == "Sun, 22 Nov 2026 20:58:06 +0000");
}
