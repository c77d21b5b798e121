// Hostile input on the real binary (README "Hostile input"): each finding of the security review, reproduced as
// it was found, must leave the daemon up and answering. Loopback only; every process is stopped.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon.h"
#include "test_helpers.h"

using nlohmann::json;

namespace {

// VmHWM (peak resident memory) of `pid`, in KiB.
long peak_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

int status_of(const httplib::Result& r) { return r ? r->status : -1; }

std::string code_of(const httplib::Result& r) {
  if (!r) return "";
  json body = json::parse(r->body, nullptr, false);
  return body.is_object() && body.contains("error") ? body["error"]["code"].get<std::string>() : "";
}

void check_up(Daemon& d) {
  REQUIRE_FALSE(d.exited());
  auto health = d.client().Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

}  // namespace

TEST_CASE("hostile: long paths on every route get 414 or a clear error, never a crash", "[e2e][hostile]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out"), "--audit-log",
            dir.file("audit.log")});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  // The review's crash: 1,000 characters killed it before any token check.
  for (const std::string route : {"/v1/suppressions/", "/v1/providers/", "/v1/events/", "/nowhere/"}) {
    for (std::size_t length : {1000u, 2000u, 5000u}) {
      const std::string path = route + std::string(length, 'a');
      const bool too_long = path.size() > 2048;
      INFO(path.substr(0, 30) << "... (" << path.size() << ")");
      std::vector<httplib::Result> answers;
      answers.push_back(c.Get(path));
      answers.push_back(c.Put(path, "{}", "application/json"));
      answers.push_back(c.Delete(path));
      answers.push_back(c.Patch(path, R"({"enabled":false})", "application/json"));
      answers.push_back(c.Head(path));
      for (const auto& r : answers) {
        REQUIRE(r);
        if (too_long) {
          CHECK(r->status == 414);
          if (r->body.size() > 0) CHECK(code_of(r) == "uri_too_long");
        } else {
          CHECK(r->status >= 400);
          CHECK(r->status < 500);
        }
      }
      check_up(d);
    }
  }
  // 100 KB: longer than any head the daemon reads. Answered 414 and closed; the daemon stays up.
  fakes::RawClient raw(d.port());
  REQUIRE(raw.connected());
  raw.send("GET /v1/suppressions/" + std::string(100000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string answer = raw.read_until("\r\n\r\n", std::chrono::seconds(10));
  CHECK(answer.rfind("HTTP/1.1 414", 0) == 0);
  check_up(d);
  // A long Range header (cpp-httplib parses it with std::regex before routing) is ignored.
  std::string range = "bytes=0-0";
  for (int i = 0; i < 1500; ++i) range += ",0-0";
  auto ranged = c.Get("/healthz", {{"Range", range}});
  CHECK(status_of(ranged) == 200);
  // A multipart body (parsed by cpp-httplib with std::regex) is refused before it is read.
  auto multipart = c.Post("/v1/send", "--x\r\nContent-Disposition: form-data; name=\"" + std::string(7000, 'a') +
                                          "\"\r\n\r\nv\r\n--x--\r\n", "multipart/form-data; boundary=x");
  CHECK(status_of(multipart) == 415);
  // TRACE and CONNECT are methods we do not take: 405 with Allow, not a 400.
  fakes::RawClient trace(d.port());
  trace.send("TRACE /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string traced = trace.read_until("\r\n\r\n", std::chrono::seconds(10));
  CHECK(traced.rfind("HTTP/1.1 405", 0) == 0);
  CHECK(traced.find("Allow: GET, HEAD") != std::string::npos);
  check_up(d);
  // A method nobody knows: 405 with Allow on a path we serve, 404 elsewhere, under its own name;
  // never cpp-httplib's 400. One with a body is refused before reading it, and the connection
  // says close and nothing else.
  for (const std::string& method : std::vector<std::string>{"FOO", "PROPFIND", "M-SEARCH"}) {
    CAPTURE(method);
    fakes::RawClient unknown(d.port());
    unknown.send(method + " /v1/send HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string head = unknown.read_until("}", std::chrono::seconds(10));
    CHECK(head.rfind("HTTP/1.1 405", 0) == 0);
    CHECK(head.find("Allow: POST\r\n") != std::string::npos);
    CHECK(head.find(method + " is not allowed on /v1/send") != std::string::npos);
    fakes::RawClient nowhere(d.port());
    nowhere.send(method + " /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(nowhere.read_until("\r\n\r\n", std::chrono::seconds(10)).rfind("HTTP/1.1 404", 0) == 0);
  }
  fakes::RawClient with_body(d.port());
  with_body.send("FOO /v1/send HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  const std::string refused = with_body.read_until("\r\n\r\n", std::chrono::seconds(10));
  CHECK(refused.rfind("HTTP/1.1 405", 0) == 0);
  CHECK(refused.find("Connection: close") != std::string::npos);
  CHECK(refused.find("Keep-Alive") == std::string::npos);
  // A malformed request line: 400, closed, and no Keep-Alive beside the close either.
  fakes::RawClient malformed(d.port());
  malformed.send("G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string bad = malformed.read_until("\r\n\r\n", std::chrono::seconds(10));
  CHECK(bad.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(bad.find("Connection: close") != std::string::npos);
  CHECK(bad.find("Keep-Alive") == std::string::npos);
  check_up(d);
  // The audit line of a target over the limit does not carry all of it.
  const std::string audit = fakes::read_file(dir.file("audit.log"));
  CHECK(audit.find(std::string(2100, 'a')) == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("hostile: unsigned webhook bodies cost neither time nor memory", "[e2e][hostile]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out"), "--audit-log",
            dir.file("audit.log")},
           {"MAILGUN_WEBHOOK_SIGNING_KEY=fake-mailgun-signing-key"});
  REQUIRE(d.port() > 0);
  const long before = peak_kib(d.pid());
  REQUIRE(before > 0);
  // The review's find: three bodies of ten million '[' at once took 2.2 GB. Now: 413 from the
  // head (the webhook limit is 1 MiB) and, under the limit, 400 before any parse.
  std::vector<std::thread> clients;
  std::vector<int> statuses(6, 0);
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] {
      const std::string body(i % 2 == 0 ? 10000000 : 1000000, '[');
      fakes::RawClient raw(d.port());
      raw.send("POST /v1/events/mailgun HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body);
      const std::string answer = raw.read_until("\r\n\r\n", std::chrono::seconds(30));
      statuses[static_cast<std::size_t>(i)] = answer.size() > 12 ? std::stoi(answer.substr(9, 3)) : -1;
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < 6; ++i) {
    INFO(i);
    CHECK(statuses[static_cast<std::size_t>(i)] == (i % 2 == 0 ? 413 : 400));
  }
  check_up(d);
  // Bodies are read whole before they are refused or checked (at most 1 MiB each here).
  const long grown_mib = (peak_kib(d.pid()) - before) / 1024;
  INFO("peak RSS grew by " << grown_mib << " MiB");
  CHECK(grown_mib < 64);
  CHECK(fakes::read_file(dir.file("audit.log")).find("\"event\":\"delivery\"") == std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("hostile: HEAD reads a suppression and never deletes it", "[e2e][hostile]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("key"), "fake-recipient-key-0123456789\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out"), "--audit-log",
            dir.file("audit.log"), "--audit-recipient-key-file", dir.file("key")});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  const std::string path = "/v1/suppressions/bob@example.org";
  REQUIRE(status_of(c.Put(path, R"({"reason":"hostile test"})", "application/json")) == 200);
  auto head = c.Head(path);
  REQUIRE(head);
  CHECK(head->status == 200);
  CHECK(head->body.empty());
  CHECK(status_of(c.Get(path)) == 200);  // still suppressed
  CHECK(status_of(c.Head("/v1/suppressions/carol@example.org")) == 404);
  CHECK(status_of(c.Delete(path)) == 200);
  CHECK(status_of(c.Head(path)) == 404);
  // An address may hold a "/" (RFC 5322 atext): encoded, it stays inside its path segment.
  const std::string slashed = "/v1/suppressions/a%2Fb@example.org";
  CHECK(status_of(c.Put(slashed, R"({"reason":"slash"})", "application/json")) == 200);
  CHECK(status_of(c.Get(slashed)) == 200);
  CHECK(status_of(c.Get("/v1/suppressions/a/b@example.org")) == 404);  // unencoded: another path
  CHECK(status_of(c.Delete(slashed)) == 200);
  const std::string audit = fakes::read_file(dir.file("audit.log"));
  CHECK(audit.find(R"("method":"HEAD","path":"/v1/suppressions/{address}","status":200,"outcome":"suppressed")") !=
        std::string::npos);
  CHECK(audit.find(R"("method":"HEAD","path":"/v1/suppressions/{address}","status":200,"outcome":"unsuppress")") ==
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("hostile: headers providers act on are refused, by name and by prefix", "[e2e][hostile]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out")});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  for (const char* name : {"Resent-Bcc", "X-SES-CONFIGURATION-SET", "X-SES-SOURCE-ARN", "X-Mailrelay-Metadata-x",
                           "Content-ID", "X-SMTPAPI", "X-Mailgun-Drop-Message", "X-PM-Message-Stream"}) {
    json request = fakes::sample_request();
    request["headers"] = {{name, "value"}};
    auto r = c.Post("/v1/send", request.dump(), "application/json");
    INFO(name);
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(json::parse(r->body)["error"]["field"] == std::string("headers.") + name);
  }
  CHECK(files_in(dir.file("out")).empty());  // nothing was sent
  CHECK(d.stop() == 0);
}

TEST_CASE("hostile: a name that looks like loopback does not turn protection off", "[e2e][hostile]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.attacker.example:0", "--providers", "outbox", "--outbox-dir", dir.file("out")});
  CHECK(d.wait_exit(5000) == 2);
  CHECK_THAT(d.err(), Catch::Contains("protected mode"));
}

TEST_CASE("hostile: the daemon cannot be dumped or read by another process of its user", "[e2e][hostile]") {
  // The unit forbids core files too.
  CHECK(fakes::read_file(std::string(MAILRELAY_SOURCE_DIR) + "/systemd/mailrelayd.service").find("\nLimitCORE=0\n") !=
        std::string::npos);
  if (geteuid() != 0) {
    WARN("not root: cannot run the daemon and a reader as another user; skipped");
    return;
  }
  fakes::TempDir dir;
  chmod(dir.path().c_str(), 0777);
  constexpr uid_t kNobody = 65534;
  // Starts `argv` as nobody; returns its pid.
  auto spawn = [&](std::vector<std::string> argv) {
    pid_t pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_RDWR);
      dup2(null, 1);
      dup2(null, 2);
      if (setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(126);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    return pid;
  };
  // Whether a process of nobody's can open /proc/<pid>/environ (where the keys of a process that
  // read them from its environment are).
  auto readable = [&](pid_t target) {
    pid_t pid = fork();
    if (pid == 0) {
      if (setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(126);
      const std::string path = "/proc/" + std::to_string(target) + "/environ";
      _exit(open(path.c_str(), O_RDONLY) >= 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
  };
  auto stop = [](pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  };
  // Control: a plain process of nobody's can be read by another one (so the check can fail).
  pid_t sleeper = spawn({"/bin/sleep", "30"});
  usleep(200 * 1000);
  CHECK(readable(sleeper));
  stop(sleeper);
  // A copy nobody can execute (the build tree may sit under a directory only root can enter).
  const std::string binary = dir.file("mailrelayd");
  fakes::write_file(binary, fakes::read_file(MAILRELAYD_PATH));
  REQUIRE(chmod(binary.c_str(), 0755) == 0);
  pid_t daemon = spawn({binary, "--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out")});
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {  // at most 10 s; the daemon creates its outbox dir when ready
    usleep(100 * 1000);
    up = access(dir.file("out").c_str(), F_OK) == 0;
  }
  CHECK(up);
  CHECK_FALSE(readable(daemon));
  stop(daemon);
}
