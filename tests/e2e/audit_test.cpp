// End-to-end audit log: the real binary under load while the log rotates or is moved away and
// reopened, a SIGKILL in the middle of a provider call, and the hash-address subcommand.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "raw_server.h"
#include "test_helpers.h"

using nlohmann::json;

namespace {

// Every line of every file named `base`, `base.*` or `base-*` in the directory; fails on a torn line.
std::vector<json> all_lines(const fakes::TempDir& dir, const std::string& base) {
  std::vector<json> out;
  for (const auto& path : files_in(dir.path())) {
    std::string name = path.substr(path.rfind('/') + 1);
    if (name.rfind(base, 0) != 0) continue;
    std::string text;
    if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) {  // compressed by logrotate
      FILE* gz = popen(("gzip -dc '" + path + "'").c_str(), "r");
      REQUIRE(gz);
      char buf[65536];
      for (std::size_t n; (n = fread(buf, 1, sizeof buf, gz)) > 0;) text.append(buf, n);
      REQUIRE(pclose(gz) == 0);
    } else {
      text = fakes::read_file(path);
    }
    std::size_t start = 0;
    for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
      json line = json::parse(text.substr(start, nl - start), nullptr, false);
      INFO(path << ": " << text.substr(start, nl - start));
      REQUIRE_FALSE(line.is_discarded());
      out.push_back(line);
    }
    INFO(path);
    REQUIRE(start == text.size());
  }
  return out;
}

// Several client threads send requests with ids "c<thread>-<n>" while `disturb` runs every 20 ms
// on this thread: at least `per_thread` each, and on until `enough()` says the disturbance has
// happened as often as the test needs (bounded: 50 times `per_thread`, 60 s). Driven by events,
// not by a count, so a fast machine cannot finish before the disturbance. Returns the ids that
// were answered 200; `sent` counts every request.
std::set<std::string> load(Daemon& d, int threads, int per_thread, const std::function<void()>& disturb,
                           const std::function<bool()>& enough = [] { return true; }, int* sent = nullptr) {
  std::atomic<int> running{threads}, requests{0};
  std::atomic<bool> done{false};
  std::mutex mutex;
  std::set<std::string> acknowledged;
  std::vector<std::thread> clients;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int t = 0; t < threads; ++t) {
    clients.emplace_back([&, t] {
      auto c = d.client();
      for (int i = 0; (i < per_thread || !done) && i < 50 * per_thread && std::chrono::steady_clock::now() < until; ++i) {
        std::string id = "c" + std::to_string(t) + "-" + std::to_string(i);
        auto r = c.Post("/v1/send", {{"X-Request-Id", id}}, fakes::sample_request().dump(), "application/json");
        ++requests;
        if (r && r->status == 200) {
          std::lock_guard<std::mutex> lock(mutex);
          acknowledged.insert(id);
        }
      }
      --running;
    });
  }
  for (int i = 0; i < 3000 && running > 0; ++i) {  // bounded: at most 60 s
    disturb();
    if (enough()) done = true;
    usleep(20 * 1000);
  }
  done = true;
  for (auto& c : clients) c.join();
  if (sent) *sent = requests;
  return acknowledged;
}

void check_each_once(const std::vector<json>& lines, const std::set<std::string>& acknowledged) {
  std::map<std::string, int> seen;
  for (const auto& l : lines) {
    if (l["event"] == "request") ++seen[l["request_id"].get<std::string>()];
  }
  for (const auto& id : acknowledged) {
    INFO(id);
    CHECK(seen[id] == 1);
  }
  CHECK(seen.size() == acknowledged.size());
}

}  // namespace

TEST_CASE("SIGUSR1 reopen under load with the file moved away: every acknowledged request once", "[e2e][audit]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log"), "--audit-log-max-bytes", "0"});
  REQUIRE(d.port() > 0);
  int moves = 0, sent = 0;
  auto acknowledged = load(
      d, 4, 500,
      [&] {
        std::string moved = dir.file("audit.log.moved" + std::to_string(moves + 1));
        if (std::rename(dir.file("audit.log").c_str(), moved.c_str()) == 0) {
          ++moves;
          d.signal(SIGUSR1);
        }
      },
      [&] { return moves >= 4; }, &sent);
  CHECK(d.stop() == 0);
  CHECK(acknowledged.size() == static_cast<std::size_t>(sent));
  CHECK(sent >= 2000);
  CHECK(moves >= 4);
  CHECK_THAT(d.err(), !Catch::Contains("could not reopen"));
  check_each_once(all_lines(dir, "audit.log"), acknowledged);
}

TEST_CASE("built-in size rotation under load: every acknowledged request once", "[e2e][audit]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log"), "--audit-log-max-bytes", "65536", "--audit-log-max-files", "1000"});
  REQUIRE(d.port() > 0);
  int sent = 0;
  auto acknowledged = load(d, 4, 500, [] {}, [] { return true; }, &sent);
  CHECK(d.stop() == 0);
  CHECK(sent == 2000);
  CHECK(acknowledged.size() == 2000);
  auto files = files_in(dir.path());
  CHECK(std::count_if(files.begin(), files.end(), [](const std::string& f) { return f.find("audit.log.") != std::string::npos; }) > 5);
  check_each_once(all_lines(dir, "audit.log"), acknowledged);
}

TEST_CASE("the shipped logrotate config rotates the live log without losing a line", "[e2e][audit]") {
  const char* logrotate = nullptr;
  for (const char* p : {"/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"}) {
    if (access(p, X_OK) == 0) logrotate = p;
  }
  if (!logrotate) {
    WARN("logrotate is not installed: skipped");
    return;
  }
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log"), "--audit-log-max-bytes", "0"});
  REQUIRE(d.port() > 0);
  // The shipped file, pointed at this test's log and daemon instead of /var/log and systemd.
  std::string conf = fakes::read_file(std::string(MAILRELAY_SOURCE_DIR) + "/logrotate/mailrelayd");
  auto replace = [&](const std::string& from, const std::string& to) {
    auto at = conf.find(from);
    REQUIRE(at != std::string::npos);
    conf.replace(at, from.size(), to);
  };
  replace("/var/log/mailrelayd/audit.log", dir.file("audit.log"));
  replace("systemctl kill --kill-whom=main --signal=SIGUSR1 mailrelayd.service", "kill -USR1 " + std::to_string(d.pid()));
  fakes::write_file(dir.file("logrotate.conf"), conf);
  std::string command = std::string(logrotate) + " -f -s " + dir.file("state") + " " + dir.file("logrotate.conf") +
                        " >> " + dir.file("logrotate.out") + " 2>&1";
  // The shipped dateformat names files to the second, so rotations are spaced a second apart.
  int rotations = 0, sent = 0;
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(2);
  auto acknowledged = load(
      d, 4, 1000,
      [&] {
        if (rotations < 3 && std::chrono::steady_clock::now() - last > std::chrono::milliseconds(1100)) {
          last = std::chrono::steady_clock::now();
          if (std::system(command.c_str()) == 0) ++rotations;
        }
      },
      [&] { return rotations >= 3; }, &sent);  // the load lasts until the rotations happened
  CHECK(d.stop() == 0);
  INFO(fakes::read_file(dir.file("logrotate.out")));
  CHECK(rotations == 3);
  CHECK(sent >= 4000);
  CHECK(acknowledged.size() == static_cast<std::size_t>(sent));
  check_each_once(all_lines(dir, "audit.log"), acknowledged);
}

TEST_CASE("SIGKILL during a slow provider call leaves that request's attempt line", "[e2e][audit]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid;
  sendgrid.push(fakes::hang());
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--audit-log", dir.file("audit.log")},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  std::thread caller([&] {
    d.client().Post("/v1/send", {{"X-Request-Id", "killed-mid-send"}}, fakes::sample_request().dump(), "application/json");
  });
  for (int i = 0; i < 500 && sendgrid.count() == 0; ++i) usleep(10 * 1000);
  REQUIRE(sendgrid.count() == 1);  // the provider has the request in hand
  d.signal(SIGKILL);
  d.wait_exit(5000);
  caller.join();
  auto lines = all_lines(dir, "audit.log");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["event"] == "attempt");
  CHECK(lines[0]["request_id"] == "killed-mid-send");
  CHECK(lines[0]["provider"] == "sendgrid");
  CHECK(lines[0]["try"] == 1);
}

TEST_CASE("hash-address prints the hash the audit log holds for that recipient", "[e2e][audit]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("recipient.key"), "fake-recipient-key-for-tests-0123\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log"), "--audit-recipient-key-file", dir.file("recipient.key")});
  REQUIRE(d.port() > 0);
  REQUIRE(d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json")->status == 200);
  CHECK(d.stop() == 0);
  auto lines = all_lines(dir, "audit.log");
  REQUIRE(lines.size() == 2);
  auto hashes = lines[1]["recipient_hashes"];
  REQUIRE(hashes.size() == 2);

  std::string command = std::string(MAILRELAYD_PATH) + " hash-address --audit-recipient-key-file " +
                        dir.file("recipient.key") + " Alice@Example.org";
  FILE* out = popen(command.c_str(), "r");
  REQUIRE(out);
  char buf[128] = {};
  std::string printed = fgets(buf, sizeof buf, out) ? buf : "";
  CHECK(pclose(out) == 0);
  CHECK(printed == hashes[0].get<std::string>() + "\n");
  CHECK(fakes::read_file(dir.file("audit.log")).find("alice@") == std::string::npos);
}

TEST_CASE("no silent resend: what the provider received and what the audit recorded agree", "[e2e][audit]") {
  fakes::TempDir dir;
  fakes::RawServer provider(fakes::RawServer::Mode::kDropSecond);  // drops the 2nd request on a connection
  // One event loop: both sends share its provider connection cache (each loop has its own).
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", provider.base_url(),
            "--audit-log", dir.file("audit.log"), "--event-threads", "1"},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  auto first = c.Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(first);
  CHECK(first->status == 200);
  auto second = c.Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(second);
  CHECK(second->status == 502);
  json attempts = json::parse(second->body)["attempts"];
  REQUIRE(attempts.size() == 1);
  CHECK(attempts[0]["may_have_been_sent"] == true);
  CHECK(d.stop() == 0);
  usleep(200 * 1000);
  int attempt_lines = 0;
  for (const auto& l : all_lines(dir, "audit.log")) attempt_lines += l["event"] == "attempt";
  CHECK(provider.requests() == 2);
  CHECK(attempt_lines == provider.requests());
}

TEST_CASE("SIGUSR1 under load is handled at once: each reopen is logged within a second", "[e2e][audit]") {
  // The old sink made a reopen wait for every writer: 1.1 to 13.1 s under 256 clients.
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log"), "--audit-log-max-bytes", "0"});
  REQUIRE(d.port() > 0);
  double worst_ms = 0;
  int signals = 0;
  auto count = [&] {
    std::string err = d.err();
    int n = 0;
    for (auto at = err.find("reopened the audit log"); at != std::string::npos; at = err.find("reopened the audit log", at + 1)) ++n;
    return n;
  };
  int sent = 0;
  auto acknowledged = load(
      d, 16, 100,
      [&] {
        if (signals >= 20) return;
        auto start = std::chrono::steady_clock::now();
        d.signal(SIGUSR1);
        ++signals;
        for (int i = 0; i < 200 && count() < signals; ++i) usleep(5 * 1000);  // at most 1 s
        worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      },
      [&] { return signals >= 20; }, &sent);
  INFO("worst " << worst_ms << " ms");
  CHECK(count() == 20);
  CHECK(worst_ms < 1000);
  auto start = std::chrono::steady_clock::now();
  CHECK(d.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  CHECK(acknowledged.size() == static_cast<std::size_t>(sent));
  check_each_once(all_lines(dir, "audit.log"), acknowledged);
}

TEST_CASE("an audit log that refuses every write: sends get 503 audit_unavailable, nothing is sent, lines reach stderr", "[e2e][audit][faults]") {
  fakes::FakeProviderServer sendgrid;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--audit-log", "/dev/full"},  // every write fails with ENOSPC, for root too
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  for (int i = 0; i < 3; ++i) {
    auto r = d.client().Post("/v1/send", {{"X-Request-Id", "full-" + std::to_string(i)}}, fakes::sample_request().dump(),
                             "application/json");
    REQUIRE(r);
    CHECK(r->status == 503);
    CHECK(json::parse(r->body)["error"]["code"] == "audit_unavailable");
  }
  CHECK(sendgrid.count() == 0);
  auto ready = d.client().Get("/readyz");
  CHECK(ready->status == 503);
  CHECK_THAT(d.client().Get("/metrics")->body, Catch::Contains("mailrelay_audit_write_errors_total 6\n"));
  CHECK(d.stop() == 0);
  std::string err = d.err();
  for (int i = 0; i < 3; ++i) CHECK_THAT(err, Catch::Contains("\"request_id\":\"full-" + std::to_string(i) + "\""));
}

namespace {
// The audit lines the daemon could not write, as it logged them on stderr.
std::vector<json> fallback_lines(const std::string& err) {
  std::vector<json> out;
  const std::string marker = "the line follows: ";
  for (auto at = err.find(marker); at != std::string::npos; at = err.find(marker, at + 1)) {
    auto begin = at + marker.size();
    out.push_back(json::parse(err.substr(begin, err.find('\n', begin) - begin)));
  }
  return out;
}
}  // namespace

TEST_CASE("rotation blocked under load: every acknowledged request has its line, one error per retry", "[e2e][audit][faults]") {
  fakes::TempDir dir;
  REQUIRE(::mkdir(dir.file("audit.log.1").c_str(), 0755) == 0);  // non-empty: cannot be removed
  REQUIRE(::mkdir(dir.file("audit.log.1/keep").c_str(), 0755) == 0);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log"), "--audit-log-max-bytes", "20000", "--audit-log-max-files", "1", "--deadline-ms", "2000"});
  REQUIRE(d.port() > 0);
  int sent = 0;
  auto start = std::chrono::steady_clock::now();
  auto acknowledged = load(d, 8, 200, [] {}, [] { return true; }, &sent);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(d.stop() == 0);
  CHECK(acknowledged.size() == static_cast<std::size_t>(sent));  // none held, none failed
  CHECK(seconds < 30);
  std::string err = d.err();
  int failures = 0;
  for (auto at = err.find("rotation failed"); at != std::string::npos; at = err.find("rotation failed", at + 1)) ++failures;
  CHECK(failures >= 1);
  CHECK(failures <= 2 + static_cast<int>(seconds));  // backoff: never once per line
  check_each_once(all_lines(dir, "audit.log"), acknowledged);
}

TEST_CASE("disk full under load: acknowledged requests equal request lines (file plus stderr), every line parses", "[e2e][audit][faults]") {
  fakes::SmallDisk mnt("256k");
  if (!mnt.mounted()) {
    WARN("cannot mount a tmpfs here (needs root): skipped");
    return;
  }
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            mnt.file("audit.log"), "--audit-log-max-bytes", "0"});
  REQUIRE(d.port() > 0);
  std::mutex mutex;
  std::map<int, int> statuses;
  std::set<std::string> acknowledged;
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      auto c = d.client();
      for (int i = 0; i < 150; ++i) {
        std::string id = "f" + std::to_string(t) + "-" + std::to_string(i);
        auto r = c.Post("/v1/send", {{"X-Request-Id", id}}, fakes::sample_request().dump(), "application/json");
        std::lock_guard<std::mutex> lock(mutex);
        ++statuses[r ? r->status : -1];
        if (r && r->status == 200) acknowledged.insert(id);
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(d.stop() == 0);
  INFO("200: " << statuses[200] << ", 503: " << statuses[503]);
  CHECK(statuses[200] + statuses[503] == 8 * 150);  // answered: sent, or refused with nothing sent
  CHECK(statuses[503] > 0);                         // the disk did fill up
  // Every acknowledged request has exactly one request line, in the file or on stderr.
  std::vector<json> lines;
  std::string text = fakes::read_file(mnt.file("audit.log"));
  std::size_t begin = 0;
  for (std::size_t nl; (nl = text.find('\n', begin)) != std::string::npos; begin = nl + 1) {
    json line = json::parse(text.substr(begin, nl - begin), nullptr, false);
    REQUIRE_FALSE(line.is_discarded());  // no torn line
    lines.push_back(line);
  }
  CHECK(begin == text.size());
  for (auto& line : fallback_lines(d.err())) lines.push_back(line);
  std::map<std::string, int> seen;
  for (const auto& l : lines) {
    if (l["event"] == "request" && l["status"] == 200) ++seen[l["request_id"].get<std::string>()];
  }
  CHECK(seen.size() == acknowledged.size());
  for (const auto& id : acknowledged) {
    INFO(id);
    CHECK(seen[id] == 1);
  }
}
