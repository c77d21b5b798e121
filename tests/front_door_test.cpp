// The front door against the cpp-httplib 0.11.4 hazards, over real sockets. Each test fails on a
// server that uses the library as it comes (noted per case) and passes on ours.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "api_harness.h"

using namespace mailrelay;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using fakes::ApiHarness;
using fakes::check_error;

namespace {

constexpr const char* kHead = "POST /v1/send HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\n";

int status_of(const std::string& response) {
  if (response.compare(0, 9, "HTTP/1.1 ") != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

bool says_close(const std::string& response) {
  std::size_t end = response.find("\r\n\r\n");
  return response.substr(0, end).find("\r\nConnection: close\r\n") != std::string::npos;
}

std::string chunked(const std::string& body, std::size_t size) {
  std::string out;
  char hex[32];
  for (std::size_t at = 0; at < body.size(); at += size) {
    std::string piece = body.substr(at, size);
    std::snprintf(hex, sizeof(hex), "%zx\r\n", piece.size());
    out += hex + piece + "\r\n";
  }
  return out + "0\r\n\r\n";
}

std::string gzip(const std::string& data) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, data.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// Fails every attempt with an exception whose text must never reach a client.
class ThrowingProvider final : public EmailProvider {
 public:
  const std::string& name() const override { return name_; }
  AttemptResult send(const Email&, std::string_view, milliseconds) override {
    throw std::runtime_error("secret-internal-detail at /etc/mailrelay");
  }

 private:
  std::string name_ = "exploding";
};

const std::string kSmuggled = "GET /smuggled HTTP/1.1\r\nHost: relay.test\r\n\r\n";

// Sends `bytes` on a fresh connection and reads until the server closes it (at most 5 s).
std::string exchange(int port, const std::string& bytes, bool* closed) {
  fakes::RawClient c(port);
  REQUIRE(c.connected());
  c.send(bytes);
  return c.read_until_closed(milliseconds(5000), closed);
}

}  // namespace

TEST_CASE("CVE-2025-46728: a chunked body is held to --max-body-bytes, 413, then a real close", "[front_door][hazards]") {
  // Library as it comes: payload_max_length is not applied to chunked bodies, all 256 KiB are read.
  ApiHarness h({}, 4096);
  fakes::RawClient c(h.port);
  c.send(std::string(kHead) + "Transfer-Encoding: chunked\r\n\r\n");
  const std::string chunk = "400\r\n" + std::string(1024, 'x') + "\r\n";
  for (int i = 0; i < 256 && c.send(chunk); ++i) {
  }
  bool closed = false;
  std::string out = c.read_until_closed(milliseconds(5000), &closed);
  CHECK(status_of(out) == 413);
  CHECK(says_close(out));
  CHECK(closed);
  CHECK(fakes::count_responses(out) == 1);
  CHECK(h.sendgrid_server.count() == 0);

  // Within the limit, a chunked body is read whole and sent.
  std::string body = fakes::sample_request().dump();
  REQUIRE(body.size() < 4096);
  out = exchange(h.port, std::string(kHead) + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked(body, 100), &closed);
  CHECK(status_of(out) == 200);
  CHECK(h.sendgrid_server.count() == 1);
  // A broken chunk size is a 400 and a close, never a hang.
  out = exchange(h.port, std::string(kHead) + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", &closed);
  CHECK(status_of(out) == 400);
  CHECK(closed);
}

TEST_CASE("CVE-2026-22776: any Content-Encoding gets 415 before anything inflates the body", "[front_door][hazards]") {
  // Library as it comes: the gzip body is inflated and the send goes out (200).
  ApiHarness h;
  for (const auto& encoding : {"gzip", "br", "deflate", "identity"}) {
    INFO(encoding);
    std::string body = std::string(encoding) == "gzip" ? gzip(fakes::sample_request().dump()) : std::string("{}");
    bool closed = false;
    std::string out = exchange(h.port, std::string(kHead) + "Content-Encoding: " + encoding + "\r\nContent-Length: " +
                                           std::to_string(body.size()) + "\r\n\r\n" + body, &closed);
    CHECK(status_of(out) == 415);
    CHECK(out.find("\"unsupported_media_type\"") != std::string::npos);
    CHECK(closed);
  }
  CHECK(h.sendgrid_server.count() == 0);
}

TEST_CASE("CVE-2026-45372: header values arrive as sent, a token with % in it authenticates", "[front_door][hazards]") {
  // Library as it comes: "%41" reaches the handler as "A", so the token below never matches and
  // the two idempotency keys collide (422).
  ApiHarness h({}, 10485760, true);
  auto ok = h.send(fakes::sample_request(), {{"Authorization", "Bearer pct%41token-0123456789"}});
  REQUIRE(ok);
  CHECK(ok->status == 200);
  check_error(h.send(fakes::sample_request(), {{"Authorization", "Bearer pctAtoken-0123456789"}}), 401, "unauthorized");

  const httplib::Headers billing{{"Authorization", "Bearer billing-token-0123456789"}};
  auto first = h.send(fakes::sample_request(), {{"Authorization", "Bearer billing-token-0123456789"}, {"Idempotency-Key", "key%41"}});
  json other = fakes::sample_request();
  other["subject"] = "another message";
  auto second = h.send(other, {{"Authorization", "Bearer billing-token-0123456789"}, {"Idempotency-Key", "keyA"}});
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->status == 200);
  CHECK(second->status == 200);
  CHECK_FALSE(second->has_header("Idempotent-Replayed"));

  auto lines = h.audit_lines();
  std::vector<std::string> clients;
  for (const auto& line : lines) {
    if (line["event"] == "request") clients.push_back(line["client"].is_null() ? "-" : line["client"].get<std::string>());
  }
  CHECK(clients == std::vector<std::string>{"percent", "-", "billing", "billing"});
}

TEST_CASE("auth table: no token, wrong, right, another client's, a token with % in it", "[front_door][auth]") {
  ApiHarness h({}, 10485760, true);
  struct Row {
    std::string authorization;
    int status;
    std::string client;
  };
  const std::vector<Row> rows = {
      {"", 401, ""},
      {"Bearer wrong-token-0123456789", 401, ""},
      {"Bearer billing-token-012345678", 401, ""},  // a prefix of a real token
      {"Basic billing-token-0123456789", 401, ""},
      {"Bearer billing-token-0123456789", 200, "billing"},
      {"bearer shop-token-0123456789ab", 200, "shop"},
      {"Bearer pct%41token-0123456789", 200, "percent"},
  };
  for (const auto& row : rows) {
    INFO(row.authorization);
    httplib::Headers headers;
    if (!row.authorization.empty()) headers.emplace("Authorization", row.authorization);
    auto r = h.send(fakes::sample_request(), headers);
    REQUIRE(r);
    CHECK(r->status == row.status);
    if (row.status == 401) CHECK(r->get_header_value("WWW-Authenticate") == "Bearer");
    json line = h.audit_lines().back();
    CHECK(line["status"] == row.status);
    if (row.client.empty()) {
      CHECK(line["client"].is_null());
    } else {
      CHECK(line["client"] == row.client);
    }
  }
}

TEST_CASE("CVE-2026-28434: an exception in a handler is a 500 JSON without its text, with an audit line", "[front_door][hazards]") {
  // Library as it comes: the text goes back in an EXCEPTION_WHAT response header.
  ApiHarness::Extras extras;
  extras.first_provider = std::make_unique<ThrowingProvider>();
  ApiHarness h({}, 10485760, false, std::move(extras));
  auto r = h.send(fakes::sample_request(), {{"X-Request-Id", "explodes-1"}});
  REQUIRE(r);
  check_error(r, 500, "internal_error");
  for (const auto& [name, value] : r->headers) {
    CHECK(name.find("EXCEPTION") == std::string::npos);
    CHECK(value.find("secret-internal-detail") == std::string::npos);
  }
  CHECK(r->body.find("secret-internal-detail") == std::string::npos);
  json line = h.audit_lines().back();
  CHECK(line["request_id"] == "explodes-1");
  CHECK(line["status"] == 500);
  CHECK(line["outcome"] == "internal_error");
  // The server goes on serving.
  auto health = h.client().Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("smuggling: a request refused before its body is read closes the connection, the body is never a request", "[front_door][hazards]") {
  // Library as it comes: each of these connections answers twice, the second time for /smuggled.
  ApiHarness h({}, 4096);
  const std::string length = "Content-Length: " + std::to_string(kSmuggled.size()) + "\r\n";
  struct Case {
    std::string name, bytes;
    int status;
  };
  const std::vector<Case> cases = {
      {"Content-Encoding refused", std::string(kHead) + "Content-Encoding: gzip\r\n" + length + "\r\n" + kSmuggled, 415},
      {"GET with a body", "GET /healthz HTTP/1.1\r\nHost: t\r\n" + length + "\r\n" + kSmuggled, 400},
      {"unknown path with a body", "POST /nowhere HTTP/1.1\r\nHost: t\r\n" + length + "\r\n" + kSmuggled, 404},
      {"declared length over the limit", std::string(kHead) + "Content-Length: 99999999\r\n\r\n" + kSmuggled, 413},
      {"Content-Length and chunked together", std::string(kHead) + length + "Transfer-Encoding: chunked\r\n\r\n" + kSmuggled, 400},
      {"a Content-Length only a decoder reads", std::string(kHead) + "Content-Length: 4%36\r\n\r\n" + kSmuggled, 400},
      {"a transfer coding other than chunked", std::string(kHead) + "Transfer-Encoding: gzip, chunked\r\n\r\n" + kSmuggled, 400},
      {"POST without a length", std::string(kHead) + "\r\n" + kSmuggled, 411},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    bool closed = false;
    std::string out = exchange(h.port, c.bytes, &closed);
    CHECK(status_of(out) == c.status);
    CHECK(fakes::count_responses(out) == 1);
    CHECK(says_close(out));
    CHECK(closed);
  }
  for (const auto& line : h.audit_lines()) CHECK(line.value("path", "") != "/smuggled");

  // A 401 is decided on the head (the access phase): the body is never read, so the connection
  // closes after the answer and what follows the body is never served.
  ApiHarness authed({}, 4096, true);
  std::string body = fakes::sample_request().dump();
  bool closed = false;
  std::string out = exchange(authed.port,
                             std::string(kHead) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body +
                                 "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                             &closed);
  CHECK(status_of(out) == 401);
  CHECK(fakes::count_responses(out) == 1);
  CHECK(says_close(out));
  CHECK(closed);
}

TEST_CASE("idle connections: 100 idle keep-alive connections do not delay a request by more than 100 ms", "[front_door][hazards]") {
  // Library as it comes: each idle connection holds a worker for the 5 s keep-alive wait, so
  // with 4 workers the request below waits seconds.
  ApiHarness::Extras extras;
  extras.door.event_threads = 1;
  ApiHarness h({}, 10485760, false, std::move(extras));
  std::vector<std::unique_ptr<fakes::RawClient>> idle;
  for (int i = 0; i < 100; ++i) {
    idle.push_back(std::make_unique<fakes::RawClient>(h.port));
    REQUIRE(idle.back()->connected());
    if (i % 2 == 0) {  // half have had a request answered, half never sent one
      idle.back()->send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
      CHECK(status_of(idle.back()->read_until("\"}", milliseconds(5000))) == 200);
    }
  }
  for (int i = 0; i < 500 && h.server.idle_connections() < 100; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(h.server.idle_connections() == 100);

  std::vector<double> ms;
  auto client = h.client();
  for (int i = 0; i < 5; ++i) {
    auto start = steady_clock::now();
    auto r = client.Post("/v1/send", fakes::sample_request().dump(), "application/json");
    ms.push_back(std::chrono::duration<double, std::milli>(steady_clock::now() - start).count());
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  std::sort(ms.begin(), ms.end());
  INFO("median " << ms[2] << " ms");
  CHECK(ms[2] < 100);
  // The idle ones are still served when they speak again.
  idle[0]->send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(status_of(idle[0]->read_until("\"}", milliseconds(5000))) == 200);
}

TEST_CASE("slow clients: a stalled head is cut at the read timeout, a trickle at the request deadline", "[front_door][hazards]") {
  // Library as it comes: a read timeout applies per read only, so the trickle holds its worker
  // for as long as it likes.
  ApiHarness::Extras extras;
  extras.door.event_threads = 1;
  extras.door.read_timeout = milliseconds(300);
  extras.door.request_read_deadline = milliseconds(1000);
  ApiHarness h({}, 10485760, false, std::move(extras));

  fakes::RawClient stalled(h.port);
  auto start = steady_clock::now();
  stalled.send("POST /v1/send HTTP/1.1\r\nHost: t\r\n");
  bool closed = false;
  std::string out = stalled.read_until_closed(milliseconds(5000), &closed);
  CHECK(closed);
  CHECK(status_of(out) == 400);  // answered (and audited), not just dropped
  CHECK(steady_clock::now() - start < milliseconds(3000));
  // A request line that never ends: a 400 too, and an audit line with the client's address.
  fakes::RawClient unfinished(h.port);
  unfinished.send("POST /v1/se");
  out = unfinished.read_until_closed(milliseconds(5000), &closed);
  CHECK(closed);
  CHECK(status_of(out) == 400);
  int given_up = 0;
  for (const auto& line : h.audit_lines()) {
    if (line["event"] == "request" && line["status"] == 400) {
      ++given_up;
      CHECK(line["client_ip"] == "127.0.0.1");
      CHECK(line["latency_ms"].get<double>() >= 250);  // the time the client took, not 0
    }
  }
  CHECK(given_up == 2);

  fakes::RawClient trickle(h.port);
  start = steady_clock::now();
  trickle.send("POST /v1/send HTTP/1.1\r\nX-Long: ");
  closed = false;
  for (int i = 0; i < 50 && !closed; ++i) {  // a byte every 100 ms, for at most 5 s
    if (!trickle.send("a")) break;
    trickle.read_until_closed(milliseconds(100), &closed);
  }
  auto held = steady_clock::now() - start;
  CHECK(held < milliseconds(3000));

  // The one worker is free again.
  auto r = h.send(fakes::sample_request());
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("lingering close: a client that writes its whole 11 MiB body before reading gets the 413", "[front_door][hazards]") {
  // What Python's http.client (and so requests) does. A server that closes right after its 413
  // makes the client's write fail with a broken pipe before it ever reads the answer.
  ApiHarness h;
  fakes::RawClient c(h.port);
  const std::size_t size = 11 * 1024 * 1024;
  std::string request = std::string(kHead) + "Content-Length: " + std::to_string(size) + "\r\n\r\n" + std::string(size, 'x');
  CHECK(c.send(request));  // every byte accepted (read and dropped), no reset
  bool closed = false;
  std::string out = c.read_until_closed(milliseconds(10000), &closed);
  CHECK(status_of(out) == 413);
  CHECK(says_close(out));
  CHECK(closed);
  CHECK(h.sendgrid_server.count() == 0);
}

TEST_CASE("memory budget: a body beyond --max-body-bytes-in-flight gets 503 overloaded unread, the others are served", "[front_door]") {
  ApiHarness::Extras extras;
  extras.door.max_body_bytes_in_flight = 12000;
  ApiHarness h({}, 10000, false, std::move(extras));
  std::string body = fakes::sample_request().dump();
  // Padded with an attachment of zero bytes in base64 (metadata that long is beyond Mailgun's limit).
  body.insert(body.size() - 1, ",\"attachments\":[{\"filename\":\"pad.bin\",\"content\":\"" +
                                   std::string((5000 - body.size()) / 4 * 4, 'A') + "\"}]");
  REQUIRE(body.size() > 5000);
  const std::string head = std::string(kHead) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  // Two requests hold what arrived of their bodies (about 10 kB of the 12 kB): bodies are counted
  // as their bytes arrive, not as declared.
  fakes::RawClient a(h.port), b(h.port), third(h.port);
  const std::size_t held = body.size() - 100;
  a.send(head + body.substr(0, held));
  b.send(head + body.substr(0, held));
  for (int i = 0; i < 200 && h.server.body_bytes_in_flight() < 2 * held; ++i) std::this_thread::sleep_for(milliseconds(10));
  REQUIRE(h.server.body_bytes_in_flight() == 2 * held);
  third.send(head + body);
  bool closed = false;
  std::string out = third.read_until_closed(milliseconds(5000), &closed);
  CHECK(status_of(out) == 503);
  CHECK(out.find("\"code\":\"overloaded\"") != std::string::npos);
  CHECK(out.find("Retry-After: 1") != std::string::npos);
  CHECK(closed);
  // The two held ones complete and are sent; the budget is free again afterwards.
  a.send(body.substr(held));
  b.send(body.substr(held));
  CHECK(status_of(a.read_until("}]}", milliseconds(5000))) == 200);
  CHECK(status_of(b.read_until("}]}", milliseconds(5000))) == 200);
  for (int i = 0; i < 200 && h.server.body_bytes_in_flight() > 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(h.server.body_bytes_in_flight() == 0);
  bool refused_line = false;
  for (const auto& line : h.audit_lines()) {
    refused_line = refused_line || (line["status"] == 503 && line["refused_by"] == "body_budget");
  }
  CHECK(refused_line);
}

TEST_CASE("slowloris: 300 connections trickling their heads hold no thread, /healthz and sends stay fast", "[front_door][hazards]") {
  // The old front door: each trickling connection held a worker until its read deadline.
  ApiHarness::Extras extras;
  extras.door.event_threads = 1;  // one loop for all of them
  extras.door.max_connections_per_ip = 0;  // all 300 come from 127.0.0.1
  ApiHarness h({}, 10485760, false, std::move(extras));
  REQUIRE(h.client().Post("/v1/send", fakes::sample_request().dump(), "application/json"));  // all servers up
  const std::size_t threads_before = fakes::thread_count();
  std::vector<std::unique_ptr<fakes::RawClient>> slow;
  for (int i = 0; i < 300; ++i) {
    slow.push_back(std::make_unique<fakes::RawClient>(h.port));
    REQUIRE(slow.back()->connected());
    slow.back()->send("POST /v1/send HTTP/1.1\r\nHost: t\r\nX-Slow: ");
  }
  std::vector<double> health_ms, send_ms;
  auto client = h.client();
  for (int round = 0; round < 5; ++round) {
    for (auto& s : slow) s->send("a");  // each keeps trickling
    auto start = steady_clock::now();
    auto r = client.Get("/healthz");
    health_ms.push_back(std::chrono::duration<double, std::milli>(steady_clock::now() - start).count());
    REQUIRE(r);
    CHECK(r->status == 200);
    start = steady_clock::now();
    r = client.Post("/v1/send", fakes::sample_request().dump(), "application/json");
    send_ms.push_back(std::chrono::duration<double, std::milli>(steady_clock::now() - start).count());
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  std::sort(health_ms.begin(), health_ms.end());
  std::sort(send_ms.begin(), send_ms.end());
  INFO("health max " << health_ms.back() << " ms, send median " << send_ms[2] << " ms");
  CHECK(health_ms.back() < 1000);
  CHECK(send_ms[2] < 100);
  // No thread per connection or request (300 of them): the margin is for the test process's own
  // servers, whose thread pools start and stop on their own schedule.
  CHECK(fakes::thread_count() < threads_before + 50);
}

TEST_CASE("a NUL inside a header value is refused (400, close), never cut short", "[front_door][hazards]") {
  ApiHarness h;
  std::string head = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: nu";
  head += '\0';
  head += "ll\r\n\r\n";
  fakes::RawClient c(h.port);
  c.send(head);
  bool closed = false;
  std::string out = c.read_until_closed(milliseconds(5000), &closed);
  CHECK(status_of(out) == 400);
  CHECK(out.find("NUL") != std::string::npos);
  CHECK(says_close(out));
  CHECK(closed);
}
