// End-to-end service behaviour: the real binary with a stand-in for systemd's notify socket,
// graceful shutdown with sends in flight, readiness.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "test_helpers.h"

using nlohmann::json;

namespace {

// Plays systemd's part: a datagram socket the daemon finds through NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~NotifySocket() { close(fd_); }
  // Waits (bounded) for a datagram containing `text`, keeping every datagram read meanwhile.
  bool wait_for(const std::string& text, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
      char buf[4096];
      ssize_t n;
      while ((n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT)) > 0) messages.emplace_back(buf, static_cast<std::size_t>(n));
      for (const auto& m : messages) {
        if (m.find(text) != std::string::npos) return true;
      }
      usleep(10 * 1000);
    }
    return false;
  }
  // Waits (bounded) until `n` datagrams contain `text`.
  bool wait_count(const std::string& text, int n, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
      wait_for(text, 0);
      if (count(text) >= n) return true;
      usleep(10 * 1000);
    }
    return false;
  }
  int count(const std::string& text) const {
    int n = 0;
    for (const auto& m : messages) n += m.find(text) != std::string::npos;
    return n;
  }
  std::vector<std::string> messages;

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace

TEST_CASE("systemd notify protocol: READY, watchdog pings, STOPPING", "[e2e][service]") {
  fakes::TempDir dir;
  NotifySocket notify(dir.file("notify.sock"));
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox")},
           {"NOTIFY_SOCKET=" + dir.file("notify.sock"), "WATCHDOG_USEC=400000"});
  REQUIRE(d.port() > 0);
  REQUIRE(notify.wait_for("READY=1", 5000));
  CHECK(notify.messages.front().find("READY=1") != std::string::npos);  // nothing before READY
  CHECK(notify.wait_for("STATUS=serving on 127.0.0.1:", 100));
  // WATCHDOG_USEC=400 ms: a ping every 200 ms while /healthz answers.
  usleep(1100 * 1000);
  notify.wait_for("WATCHDOG=1", 100);
  CHECK(notify.count("WATCHDOG=1") >= 3);
  d.signal(SIGTERM);
  CHECK(notify.wait_for("STOPPING=1", 5000));
  CHECK(d.wait_exit(10000) == 0);
}

TEST_CASE("SIGTERM with 20 sends in flight: every one completes 200, new work gets 503, exit 0", "[e2e][service]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid;
  fakes::FakeReply slow;
  slow.delay = std::chrono::milliseconds(1500);
  sendgrid.push_n(20, slow);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--audit-log", dir.file("audit.log")},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  // A keep-alive connection that is open before the shutdown begins.
  httplib::Client idle("127.0.0.1", d.port());
  idle.set_keep_alive(true);
  REQUIRE(idle.Get("/healthz")->status == 200);

  std::atomic<int> ok{0};
  std::vector<std::thread> senders;
  for (int i = 0; i < 20; ++i) {
    senders.emplace_back([&, i] {
      auto r = d.client().Post("/v1/send", {{"X-Request-Id", "inflight-" + std::to_string(i)}},
                               fakes::sample_request().dump(), "application/json");
      if (r && r->status == 200) ++ok;
    });
  }
  for (int i = 0; i < 1000 && sendgrid.count() < 20; ++i) usleep(10 * 1000);
  CHECK(sendgrid.count() == 20);  // all 20 are with the provider now
  d.signal(SIGTERM);
  usleep(200 * 1000);
  auto late = idle.Post("/v1/send", fakes::sample_request().dump(), "application/json");
  CHECK(late);
  if (late) {
    CHECK(late->status == 503);
    CHECK(json::parse(late->body)["error"]["code"] == "overloaded");
    CHECK(late->get_header_value("Retry-After") == "1");
    CHECK(late->get_header_value("Connection") == "close");  // no further request on it
  }
  idle.stop();
  for (auto& t : senders) t.join();
  CHECK(ok == 20);
  CHECK(d.wait_exit(15000) == 0);
  std::string audit = fakes::read_file(dir.file("audit.log"));
  for (int i = 0; i < 20; ++i) {
    CHECK(audit.find("\"request_id\":\"inflight-" + std::to_string(i) + "\",\"client_ip\"") != std::string::npos);
  }
}

TEST_CASE("readyz is 200 while serving", "[e2e][service]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.path()});
  REQUIRE(d.port() > 0);
  auto r = d.client().Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["status"] == "ready");
  CHECK(d.stop() == 0);
}

TEST_CASE("the shipped unit passes systemd-analyze verify and scores 1.5 or lower", "[e2e][service]") {
  if (access("/usr/bin/systemd-analyze", X_OK) != 0 && access("/bin/systemd-analyze", X_OK) != 0) {
    WARN("systemd-analyze is not installed: unit checks skipped");
    return;
  }
  fakes::TempDir dir;
  // verify checks that ExecStart exists, so point it at the binary under test.
  std::string unit = fakes::read_file(std::string(MAILRELAY_SOURCE_DIR) + "/systemd/mailrelayd.service");
  const std::string installed = "/usr/bin/mailrelayd";
  int replaced = 0;
  for (auto at = unit.find(installed); at != std::string::npos; at = unit.find(installed, at)) {
    unit.replace(at, installed.size(), MAILRELAYD_PATH);
    ++replaced;
  }
  CHECK(replaced == 2);  // ExecStart, and ExecReload's `mailrelayd reload`
  fakes::write_file(dir.file("mailrelayd.service"), unit);
  // --man=no: the manual page is not installed while testing (tests/systemd/run.sh checks it installed).
  std::string verify = "systemd-analyze verify --man=no " + dir.file("mailrelayd.service") + " > " + dir.file("verify.out") + " 2>&1";
  int rc = std::system(verify.c_str());
  std::string out = fakes::read_file(dir.file("verify.out"));
  INFO(out);
  // In a container without systemd as PID 1, verify also reports the manager's own state;
  // only lines about our unit count.
  CHECK(out.find("mailrelayd.service:") == std::string::npos);
  (void)rc;

  std::string security = "systemd-analyze security --offline=true " + dir.file("mailrelayd.service") + " 2>&1 | tail -1 > " + dir.file("score.out");
  REQUIRE(std::system(security.c_str()) == 0);
  std::string score_line = fakes::read_file(dir.file("score.out"));
  INFO(score_line);
  auto colon = score_line.find(": ");
  REQUIRE(colon != std::string::npos);
  double score = std::stod(score_line.substr(colon + 2));
  CHECK(score <= 1.5);
}

TEST_CASE("SIGHUP switches the provider order for new requests and keeps serving through a broken config", "[e2e][service]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, mailgun;
  NotifySocket notify(dir.file("notify.sock"));
  auto write_config = [&](const std::string& providers, const std::string& extra = "") {
    fakes::write_file(dir.file("mailrelay.conf"),
                      "providers = \"" + providers + "\"\nsendgrid-base-url = \"" + sendgrid.base_url() +
                          "\"\nmailgun-base-url = \"" + mailgun.base_url() + "\"\nmailgun-domain = \"" +
                          fakes::kMailgunDomain + "\"\n" + extra);
  };
  write_config("sendgrid,mailgun");
  Daemon d({"--listen", "127.0.0.1:0", "--config", dir.file("mailrelay.conf")},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey, std::string("MAILGUN_API_KEY=") + fakes::kMailgunKey,
            "NOTIFY_SOCKET=" + dir.file("notify.sock")});
  REQUIRE(d.port() > 0);
  REQUIRE(notify.wait_for("READY=1", 5000));
  auto provider_of_next_send = [&] {
    auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    return json::parse(r->body)["provider"].get<std::string>();
  };
  CHECK(provider_of_next_send() == "sendgrid");

  write_config("mailgun,sendgrid");
  d.signal(SIGHUP);
  CHECK(notify.wait_for("RELOADING=1", 5000));
  for (int i = 0; i < 500 && d.err().find("reloaded configuration") == std::string::npos; ++i) usleep(10 * 1000);
  CHECK(notify.wait_count("READY=1", 2, 5000));
  CHECK(provider_of_next_send() == "mailgun");

  write_config("mailgun,sendgrid", "no_such_option = 1\n");
  d.signal(SIGHUP);
  for (int i = 0; i < 500 && d.err().find("reload failed") == std::string::npos; ++i) usleep(10 * 1000);
  CHECK_THAT(d.err(), Catch::Contains("reload failed, keeping the running configuration") &&
                          Catch::Contains("no_such_option"));
  CHECK(notify.wait_for("STATUS=reload failed", 2000));
  CHECK(provider_of_next_send() == "mailgun");  // still serving, on the previous configuration
  CHECK(d.stop() == 0);
}

TEST_CASE("overload: beyond --max-in-flight, sends get a fast 503 while admitted ones complete", "[e2e][service]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid;
  fakes::FakeReply slow;
  slow.delay = std::chrono::milliseconds(1500);
  sendgrid.push_n(10, slow);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--threads", "1", "--max-in-flight", "4", "--max-queue", "2"},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  CHECK_THAT(d.err(), Catch::Contains("--max-queue is deprecated and ignored"));
  CHECK_THAT(d.err(), Catch::Contains("--threads is deprecated and ignored"));
  REQUIRE(d.port() > 0);
  std::mutex mutex;
  std::vector<std::pair<int, double>> answers;  // status, seconds
  std::vector<std::thread> clients;
  for (int i = 0; i < 10; ++i) {
    clients.emplace_back([&] {
      auto begin = std::chrono::steady_clock::now();
      auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
      double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      std::lock_guard<std::mutex> lock(mutex);
      answers.emplace_back(r ? r->status : -1, took);
    });
    usleep(20 * 1000);  // arrive in order: 4 admitted, the rest beyond
  }
  for (auto& t : clients) t.join();
  int ok = 0, overloaded = 0;
  for (const auto& [status, took] : answers) {
    if (status == 200) ++ok;
    if (status == 503) {
      ++overloaded;
      CHECK(took < 0.5);  // answered at once, not after the slow sends
    }
  }
  CHECK(ok == 4);
  CHECK(overloaded == 6);
  CHECK(d.client().Get("/healthz")->status == 200);  // health checks still answer
  CHECK(d.stop() == 0);
}

TEST_CASE("bursts of keep-alive clients back to back never wedge the daemon (the deadlock in small)", "[e2e][service]") {
  // The old pool deadlocked here for good: its workers, re-queueing keep-alive connections into
  // a full queue, waited for room only they could make. 1 warm thread, 4 sends in flight, 48
  // keep-alive clients in two bursts back to back against a 100 ms provider.
  fakes::FakeProviderServer sendgrid;
  fakes::FakeReply slow;
  slow.delay = std::chrono::milliseconds(100);
  sendgrid.push_n(400, slow);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--max-in-flight", "4"},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  std::atomic<int> ok{0}, overloaded{0}, other{0};
  std::atomic<bool> bursting{true};
  std::vector<double> health_ms;
  std::thread prober([&] {  // /healthz answers within 1 s throughout
    httplib::Client c("127.0.0.1", d.port());
    c.set_read_timeout(5, 0);
    for (int i = 0; i < 200 && bursting; ++i) {
      auto start = std::chrono::steady_clock::now();
      auto r = c.Get("/healthz");
      health_ms.push_back(r && r->status == 200
                              ? std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count()
                              : 1e9);
      usleep(50 * 1000);
    }
  });
  for (int burst = 0; burst < 2; ++burst) {
    std::vector<std::thread> clients;
    for (int i = 0; i < 48; ++i) {
      clients.emplace_back([&] {
        httplib::Client c("127.0.0.1", d.port());
        c.set_keep_alive(true);
        c.set_read_timeout(10, 0);
        for (int n = 0; n < 5; ++n) {
          auto r = c.Post("/v1/send", fakes::sample_request().dump(), "application/json");
          if (r && r->status == 200) ++ok;
          else if (r && r->status == 503) ++overloaded;
          else ++other;
        }
      });
    }
    for (auto& t : clients) t.join();
  }
  bursting = false;
  prober.join();
  CHECK(other == 0);                     // every request answered, 200 or 503
  CHECK(ok + overloaded == 2 * 48 * 5);
  CHECK(ok >= 4);
  REQUIRE_FALSE(health_ms.empty());
  CHECK(*std::max_element(health_ms.begin(), health_ms.end()) < 1000);
  CHECK(d.client().Get("/healthz")->status == 200);  // serving again once the bursts end
  auto start = std::chrono::steady_clock::now();
  CHECK(d.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}
