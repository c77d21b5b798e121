// The front door on the real binary (README "The front door", issue 34): each finding of the
// second security review, reproduced as it was found. Loopback only; every process is stopped.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon.h"
#include "test_helpers.h"

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr const char* kToken = "billing-token-0123456789";

int status_of(const std::string& response) {
  if (response.compare(0, 9, "HTTP/1.1 ") != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string head_of(const std::string& response) { return response.substr(0, response.find("\r\n\r\n") + 2); }

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Sends `bytes` on a new connection; reads until the daemon closes it (at most `wait`).
std::string exchange(int port, const std::string& bytes, bool* closed, milliseconds wait = milliseconds(5000)) {
  fakes::RawClient c(port);
  REQUIRE(c.connected());
  c.send(bytes);
  return c.read_until_closed(wait, closed);
}

// The value of one unlabelled metric in /metrics.
double metric(Daemon& d, const std::string& name) {
  auto r = d.client().Get("/metrics");
  REQUIRE(r);
  const std::size_t at = r->body.find("\n" + name + " ");
  REQUIRE(at != std::string::npos);
  return std::stod(r->body.substr(at + name.size() + 2));
}

std::string send_body() { return fakes::sample_request().dump(); }

struct Relay {
  fakes::TempDir dir;
  std::unique_ptr<Daemon> daemon;
  explicit Relay(std::vector<std::string> extra = {}, bool tokens = false) {
    std::vector<std::string> args{"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out"),
                                  "--audit-log", dir.file("audit.log")};
    if (tokens) {
      fakes::write_file(dir.file("tokens"), std::string("billing:") + kToken + "\n");
      args.insert(args.end(), {"--tokens-file", dir.file("tokens")});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    daemon = std::make_unique<Daemon>(args);
    REQUIRE(daemon->port() > 0);
  }
  int port() const { return daemon->port(); }
  std::size_t sent() { return files_in(dir.file("out")).size(); }
};

}  // namespace

TEST_CASE("front door: a request the framing refuses is never executed (chunk syntax, 0x sizes)", "[e2e][front_door]") {
  Relay relay;
  const std::string body = send_body();
  char size[32];
  std::snprintf(size, sizeof(size), "%zx", body.size());
  const std::string head = "POST /v1/send HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string& chunks : {std::string(size) + "\r\n" + body + "XX\r\n0\r\n\r\n",            // bytes after the data
                                    "0x" + std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n",       // a 0x size
                                    " " + std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n",        // a leading space
                                    std::string(16, '0') + size + "\r\n" + body + "\r\n0\r\n\r\n"}) {  // 16 leading zeros
    CAPTURE(chunks.substr(0, 24));
    // Whole, and split in two at every 7th byte: the verdict does not depend on the packets.
    for (std::size_t split = 0; split <= chunks.size(); split += chunks.size() / 3) {
      fakes::RawClient c(relay.port());
      REQUIRE(c.connected());
      c.send(head + chunks.substr(0, split));
      std::this_thread::sleep_for(milliseconds(20));
      c.send(chunks.substr(split) + "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
      bool closed = false;
      const std::string out = c.read_until_closed(milliseconds(5000), &closed);
      CHECK(status_of(out) == 400);
      CHECK(fakes::count_responses(out) == 1);  // the pipelined request after it is not read either
      CHECK(closed);
    }
  }
  CHECK(relay.sent() == 0);
  // The same body, well chunked, is sent.
  bool closed = false;
  const std::string ok = exchange(relay.port(), head + std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n", &closed, milliseconds(1000));
  CHECK(status_of(ok) == 200);
  CHECK(relay.sent() == 1);
}

TEST_CASE("front door: CR, LF, NUL or DEL in a value, obs-fold, a space before the colon, Host missing or twice: 400 and close", "[e2e][front_door]") {
  Relay relay;
  const std::vector<std::string> heads = {
      "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\nContent-Length: 35\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
      std::string("GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", 43),
      "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x7f\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n",
      "GET /healthz HTTP/1.1\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
  };
  for (const std::string& h : heads) {
    CAPTURE(h);
    bool closed = false;
    // Three requests on one connection: one answer, a 400, then the connection closes.
    const std::string out = exchange(relay.port(), h + h + h, &closed);
    CHECK(status_of(out) == 400);
    CHECK(fakes::count_responses(out) == 1);
    CHECK(count_of(head_of(out), "Connection: close") == 1);
    CHECK(closed);
  }
  // A chunk extension that ends in a bare LF is answered at once, not left hanging.
  const auto start = steady_clock::now();
  bool closed = false;
  const std::string out = exchange(relay.port(),
                                   "POST /v1/send HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n2;ext\n{}\r\n0\r\n\r\n",
                                   &closed);
  CHECK(status_of(out) == 400);
  CHECK(closed);
  CHECK(steady_clock::now() - start < milliseconds(3000));
  CHECK(relay.sent() == 0);
}

TEST_CASE("front door: Connection tokens are case-insensitive, close and length are said once, no Accept-Ranges", "[e2e][front_door]") {
  Relay relay;
  bool closed = false;
  std::string out = exchange(relay.port(),
                             "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: CLOSE\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                             &closed, milliseconds(3000));
  CHECK(status_of(out) == 200);
  CHECK(fakes::count_responses(out) == 1);
  CHECK(closed);
  CHECK(out.find("Accept-Ranges") == std::string::npos);
  out = exchange(relay.port(), "POST /v1/send HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\r\n", &closed);
  CHECK(status_of(out) == 411);
  CHECK(count_of(head_of(out), "Connection: close") == 1);
  CHECK(count_of(head_of(out), "Content-Length") == 1);
  CHECK(out.find("Keep-Alive") == std::string::npos);
  // HTTP/1.0 closes unless it asks to keep the connection.
  out = exchange(relay.port(), "GET /healthz HTTP/1.0\r\n\r\n", &closed, milliseconds(3000));
  CHECK(status_of(out) == 200);
  CHECK(closed);
}

TEST_CASE("front door: access before the body: no 100 Continue and no body memory for a request refused from its head", "[e2e][front_door]") {
  Relay relay({"--max-body-bytes", "1048576", "--max-body-bytes-in-flight", "2097152"}, true);
  // The review's attack: connections without a token declare large bodies and trickle them.
  std::vector<std::unique_ptr<fakes::RawClient>> attackers;
  for (int i = 0; i < 20; ++i) {
    attackers.push_back(std::make_unique<fakes::RawClient>(relay.port()));
    REQUIRE(attackers.back()->connected());
    attackers.back()->send("POST /v1/send HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                           "Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\nx");
  }
  for (auto& a : attackers) {
    const std::string out = a->read_until("}}", milliseconds(5000));
    CHECK(status_of(out) == 401);  // at once, and no "HTTP/1.1 100 Continue" before it
    CHECK(out.find("WWW-Authenticate: Bearer") != std::string::npos);
  }
  CHECK(metric(*relay.daemon, "mailrelay_body_bytes_in_flight") == 0);
  // A valid send is served meanwhile.
  auto c = relay.daemon->client();
  auto sent = c.Post("/v1/send", {{"Authorization", std::string("Bearer ") + kToken}}, send_body(), "application/json");
  REQUIRE(sent);
  CHECK(sent->status == 200);
  // A body over the limit: 413 from the head, no 100 Continue, and the close said alone.
  bool closed = false;
  std::string out = exchange(relay.port(),
                             "POST /v1/send HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + std::string(kToken) +
                                 "\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\nExpect: 100-continue\r\n\r\n",
                             &closed);
  CHECK(status_of(out) == 413);
  CHECK(out.find("100 Continue") == std::string::npos);
  CHECK(out.find("Keep-Alive") == std::string::npos);
  CHECK(closed);
  // Admitted from its head, a request is told to go on.
  fakes::RawClient go(relay.port());
  const std::string body = send_body();
  go.send("POST /v1/send HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n");
  CHECK(go.read_until("\r\n\r\n", milliseconds(5000)).rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
  go.send(body);
  CHECK(status_of(go.read_until("}]}", milliseconds(5000))) == 200);
}

TEST_CASE("front door: webhook bodies (no caller known from the head) hold at most a sixteenth of the body budget", "[e2e][front_door]") {
  // 2 MiB in flight: the unauthenticated share is 128 KiB.
  Relay relay({"--max-body-bytes", "1048576", "--max-body-bytes-in-flight", "2097152"}, true);
  const std::string head = "POST /v1/events/sendgrid HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
  fakes::RawClient first(relay.port()), second(relay.port());
  first.send(head + std::string(100 * 1024, 'x'));
  for (int i = 0; i < 200 && metric(*relay.daemon, "mailrelay_body_bytes_in_flight") < 100 * 1024; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  CHECK(metric(*relay.daemon, "mailrelay_body_bytes_in_flight") == 100 * 1024);
  second.send(head + std::string(100 * 1024, 'x'));
  const std::string out = second.read_until("}}", milliseconds(5000));
  CHECK(status_of(out) == 503);
  CHECK(out.find("\"overloaded\"") != std::string::npos);
  // An authenticated send still has the rest of the budget.
  auto sent = relay.daemon->client().Post("/v1/send", {{"Authorization", std::string("Bearer ") + kToken}},
                                          std::string(300 * 1024, ' ') + send_body(), "application/json");
  REQUIRE(sent);
  CHECK(sent->status == 200);
}

TEST_CASE("front door: the connection table cannot be held: idle connections make room, one address has a limit", "[e2e][front_door]") {
  Relay relay({"--max-connections", "64", "--max-connections-per-ip", "0"});
  // 100 idle connections, half after a request: more than the table holds.
  std::vector<std::unique_ptr<fakes::RawClient>> idle;
  for (int i = 0; i < 100; ++i) {
    idle.push_back(std::make_unique<fakes::RawClient>(relay.port()));
    REQUIRE(idle.back()->connected());
    if (i % 2 == 0) {
      idle.back()->send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
      idle.back()->read_until("\"}", milliseconds(5000));
    }
  }
  // A new client is served at once; so are ten more.
  for (int i = 0; i < 10; ++i) {
    const auto start = steady_clock::now();
    auto r = relay.daemon->client().Get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(steady_clock::now() - start < milliseconds(2000));
  }
  CHECK(metric(*relay.daemon, "mailrelay_connections") <= 64);
  CHECK(metric(*relay.daemon, "mailrelay_connections_evicted_total") >= 36);

  Relay limited({"--max-connections-per-ip", "4"});
  std::vector<std::unique_ptr<fakes::RawClient>> mine;
  for (int i = 0; i < 4; ++i) {  // each admitted: answered on a connection it keeps
    mine.push_back(std::make_unique<fakes::RawClient>(limited.port()));
    mine.back()->send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(status_of(mine.back()->read_until("\"}", milliseconds(5000))) == 200);
  }
  bool closed = false;
  const std::string out = exchange(limited.port(), "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &closed);
  CHECK(status_of(out) == 503);
  CHECK(out.find("max-connections-per-ip") != std::string::npos);
  CHECK(closed);
  mine.pop_back();  // one closes: room again
  std::string again;
  for (int i = 0; i < 50 && status_of(again) != 200; ++i) {
    std::this_thread::sleep_for(milliseconds(20));
    again = exchange(limited.port(), "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &closed);
  }
  CHECK(status_of(again) == 200);
}

TEST_CASE("front door: the systemd watchdog is fed from the loops, not through the listener", "[e2e][front_door]") {
  // A notify socket of our own stands in for systemd's (sd_notify speaks to NOTIFY_SOCKET).
  fakes::TempDir dir;
  const std::string path = dir.file("notify");
  int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(sock >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  timeval tv{0, 100 * 1000};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out"), "--audit-log",
            dir.file("audit.log"), "--max-connections", "64", "--max-connections-per-ip", "0"},
           {"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=400000"});
  REQUIRE(d.port() > 0);
  // The table held full of connections that never send a byte (the review's 520 idle sockets).
  std::vector<std::unique_ptr<fakes::RawClient>> idle;
  for (int i = 0; i < 150; ++i) idle.push_back(std::make_unique<fakes::RawClient>(d.port()));
  int pings = 0;
  const auto until = steady_clock::now() + std::chrono::seconds(3);
  char buf[512];
  while (steady_clock::now() < until) {
    const ssize_t n = ::recv(sock, buf, sizeof(buf) - 1, 0);
    if (n > 0 && std::string(buf, static_cast<std::size_t>(n)).find("WATCHDOG=1") != std::string::npos) ++pings;
  }
  ::close(sock);
  CHECK(pings >= 5);  // every 200 ms: 15 in 3 s on an idle machine
  CHECK(d.err().find("watchdog:") == std::string::npos);
  auto health = d.client().Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(d.stop() == 0);
}
