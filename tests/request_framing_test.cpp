#include <catch2/catch.hpp>

#include <string>
#include <tuple>

#include "request_framing.h"

using namespace mailrelay;
using State = Framing::State;

namespace {
Framing scan(const std::string& bytes, std::uint64_t max_body = 100) { return scan_request(bytes, 1024, max_body); }
const std::string kPost = "POST /v1/send HTTP/1.1\r\nHost: t\r\n";
}  // namespace

TEST_CASE("framing: whole requests, partial ones, and the ones refused from the head", "[request_framing]") {
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
  const std::string five = kPost + "Content-Length: 5\r\n\r\nabcde";
  const std::string spaced = kPost + "content-length:  5 \r\n\r\nabcde";
  const std::string chunks = kPost + "Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
  const std::string trailer = kPost + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTrailer: v\r\n\r\n";
  // bytes received, state, the request they hold when complete (what follows is pipelined)
  auto [bytes, state, request] = GENERATE_COPY(table<std::string, State, std::string>({
      {get, State::kComplete, get},
      {get + "GET /next", State::kComplete, get},
      {get.substr(0, get.size() - 2), State::kNeedMore, ""},
      {kPost + "Content-Length: 5\r\n\r\nabc", State::kNeedMore, ""},
      {five, State::kComplete, five},
      {spaced + "XX", State::kComplete, spaced},
      {kPost + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", State::kNeedMore, ""},
      {chunks, State::kComplete, chunks},
      {trailer + "GET", State::kComplete, trailer},
      // Refused from the head: the handler answers 400, 413 or 411 without the body.
      {kPost + "Content-Length: 101\r\n\r\n", State::kRefuse, ""},
      {kPost + "Content-Length: 4%36\r\n\r\n", State::kRefuse, ""},
      {kPost + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nabcde", State::kRefuse, ""},
      {kPost + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", State::kRefuse, ""},
      {kPost + "Transfer-Encoding: gzip\r\n\r\n", State::kRefuse, ""},
      {kPost + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", State::kRefuse, ""},
      {kPost + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX", State::kRefuse, ""},
      {kPost + "Transfer-Encoding: chunked\r\n\r\n65\r\n", State::kRefuse, ""},  // 101 bytes > 100
      {"GET /" + std::string(2000, 'a'), State::kRefuse, ""},                     // head over 1024
  }));
  INFO(bytes);
  Framing f = scan(bytes);
  CHECK(f.state == state);
  if (state == State::kComplete) CHECK(f.size == request.size());
}

TEST_CASE("framing: the declared body is known before it arrives (memory budget), and 100-continue", "[request_framing]") {
  Framing f = scan(kPost + "Content-Length: 80\r\nExpect: 100-continue\r\n\r\n");
  CHECK(f.state == State::kNeedMore);
  CHECK(f.body == 80);
  CHECK(f.length_known);
  CHECK(f.expect_continue);
  CHECK(f.head == kPost.size() + 20 + 22 + 2);
  f = scan(kPost + "Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n");
  CHECK(f.state == State::kNeedMore);
  CHECK(f.body == 16);  // so far
  CHECK_FALSE(f.length_known);
}

TEST_CASE("framing: a method cpp-httplib does not parse stands in as TRACE, under its own name", "[request_framing]") {
  std::string in = "PROPFIND /v1/send HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
  std::size_t end = in.find("GET /next");
  CHECK(stand_in_method(in, end) == "PROPFIND");
  CHECK(in.substr(0, end) == "TRACE /v1/send HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(in.substr(end) == "GET /next HTTP/1.1\r\n\r\n");  // the pipelined request is untouched
  for (std::string known : {"GET / HTTP/1.1\r\n\r\n", "PATCH / HTTP/1.1\r\n\r\n", "G(T / HTTP/1.1\r\n\r\n",
                            " / HTTP/1.1\r\n\r\n", "nospace"}) {
    CAPTURE(known);
    std::string copy = known;
    std::size_t known_end = copy.size();
    CHECK(stand_in_method(copy, known_end).empty());
    CHECK(copy == known);
    CHECK(known_end == known.size());
  }
}

TEST_CASE("framing: one header dropped from an answer's head, by name", "[request_framing]") {
  const std::string head = "HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nkeep-alive: timeout=5\r\n"
                           "X-Keep-Alive-Not: 1\r\nContent-Length: 2\r\n\r\n";
  CHECK(without_header_line(head, "Keep-Alive") ==
        "HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nX-Keep-Alive-Not: 1\r\nContent-Length: 2\r\n\r\n");
}
