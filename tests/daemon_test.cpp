// Daemon: the wiring main() used to hold, in-process: start on a free port, the reload policy
// (what a SIGHUP may and may not change), overrides outliving a reload, stop.
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

#include <catch2/catch.hpp>

#include "daemon.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

namespace {

struct Fixture {
  fakes::TempDir dir;
  std::ostringstream ops_text;
  std::shared_ptr<spdlog::logger> log =
      std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::ostream_sink_mt>(ops_text));

  Config config(std::vector<std::string> more = {}) {
    const std::vector<std::string> base{"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir",
                                        dir.file("outbox"), "--audit-log", dir.file("audit.log")};
    std::vector<std::string> args = more;  // `more` replaces what it names
    for (std::size_t i = 0; i + 1 < base.size(); i += 2) {
      if (std::find(more.begin(), more.end(), base[i]) == more.end()) args.insert(args.end(), {base[i], base[i + 1]});
    }
    auto loaded = load_config(args);
    REQUIRE(loaded);
    return std::move(loaded).value();
  }
  std::unique_ptr<Daemon> start(const Config& c) {
    auto started = Daemon::start(c, *log);
    REQUIRE(started);
    return std::move(started).value();
  }
  httplib::Client client(const Daemon& d) {
    httplib::Client c("127.0.0.1", d.port());
    c.set_read_timeout(10, 0);
    return c;
  }
  std::string ops() {
    log->flush();
    return ops_text.str();
  }
};

const char* kSend = R"({"from":{"email":"app@example.com"},"to":[{"email":"user@example.net"}],"subject":"s","text":"t"})";

}  // namespace

TEST_CASE("daemon: starts on a free port, serves, stops", "[daemon]") {
  Fixture f;
  auto d = f.start(f.config());
  CHECK(d->port() > 0);
  CHECK(d->where() == "127.0.0.1:" + std::to_string(d->port()));
  CHECK(d->serving());
  auto sent = f.client(*d).Post("/v1/send", kSend, "application/json");
  REQUIRE(sent);
  CHECK(sent->status == 200);
  CHECK(d->stop());
  CHECK_FALSE(f.client(*d).Get("/healthz"));
}

TEST_CASE("daemon: a configuration that cannot start says why", "[daemon]") {
  Fixture f;
  Config c = f.config({"--audit-log", "/nonexistent-dir/audit.log"});
  auto started = Daemon::start(c, *f.log);
  REQUIRE_FALSE(started);
  CHECK(started.error().code == 2);
  CHECK(started.error().text.find("audit") != std::string::npos);
}

TEST_CASE("daemon reload: tokens, providers and rate limits apply to new requests", "[daemon]") {
  Fixture f;
  auto d = f.start(f.config());
  fakes::write_file(f.dir.file("tokens"), "billing:billing-token-0123456789\n");
  auto report = d->reload(f.config({"--tokens-file", f.dir.file("tokens"), "--rate-limits", "billing=1/h"}));
  REQUIRE(report);
  CHECK(report.value().restart_only.empty());
  CHECK(report.value().providers == "outbox");
  auto c = f.client(*d);
  CHECK(c.Post("/v1/send", kSend, "application/json")->status == 401);
  httplib::Headers billing{{"Authorization", "Bearer billing-token-0123456789"}};
  CHECK(c.Post("/v1/send", billing, kSend, "application/json")->status == 200);
  CHECK(c.Post("/v1/send", billing, kSend, "application/json")->status == 429);
}

TEST_CASE("daemon reload: a broken tokens file or turning auth off keeps the running configuration", "[daemon]") {
  Fixture f;
  fakes::write_file(f.dir.file("tokens"), "billing:billing-token-0123456789\n");
  auto d = f.start(f.config({"--tokens-file", f.dir.file("tokens")}));
  fakes::write_file(f.dir.file("broken"), "billing:short\n");
  auto broken = d->reload(f.config({"--tokens-file", f.dir.file("broken")}));
  REQUIRE_FALSE(broken);
  CHECK(broken.error().message.find("line 1") != std::string::npos);
  auto off = d->reload(f.config());
  REQUIRE_FALSE(off);
  CHECK(off.error().message.find("authentication off") != std::string::npos);
  // Still the first configuration: the token works, no token does not.
  auto c = f.client(*d);
  CHECK(c.Post("/v1/send", {{"Authorization", "Bearer billing-token-0123456789"}}, kSend, "application/json")->status == 200);
  CHECK(c.Post("/v1/send", kSend, "application/json")->status == 401);
}

TEST_CASE("daemon reload: options that need a restart are reported and not applied", "[daemon]") {
  Fixture f;
  auto d = f.start(f.config());
  const int port = d->port();
  auto report = d->reload(f.config({"--event-threads", "4", "--listen", "127.0.0.1:1", "--state-store-timeout-ms", "80"}));
  REQUIRE(report);
  CHECK(report.value().restart_only == std::vector<std::string>{"listen", "event-threads", "state-store-timeout-ms"});
  CHECK(d->port() == port);
  CHECK(d->where() == "127.0.0.1:" + std::to_string(port));
  CHECK(f.ops().find("reload: event-threads changed; it takes effect only after a restart") != std::string::npos);
}

TEST_CASE("daemon reload: provider overrides outlive it", "[daemon][control]") {
  Fixture f;
  auto d = f.start(f.config());
  auto c = f.client(*d);
  auto off = c.Patch("/v1/providers/outbox", json{{"enabled", false}, {"reason", "maintenance"}}.dump(), "application/json");
  REQUIRE(off);
  REQUIRE(off->status == 200);
  REQUIRE(d->reload(f.config()));
  json view = json::parse(c.Get("/v1/providers")->body);
  CHECK(view["providers"][0]["enabled"] == false);
  CHECK(view["providers"][0]["reason"] == "maintenance");
  CHECK(c.Post("/v1/send", kSend, "application/json")->status == 503);
}
