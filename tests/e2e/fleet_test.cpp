// One fleet, one memory (README "Running several instances" and "Other endpoints"): three real daemons sharing a real redis-server
// on a free loopback port, against fake SendGrid and Mailgun servers. One key across instances,
// a provider switched off on one and followed by the others, a rate limit held fleet-wide, Redis
// killed and restarted under load, an instance restarted with its keys remembered.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "redis_server.h"
#include "test_helpers.h"

using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

struct Fleet {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, mailgun;
  fakes::RedisServer redis;
  std::vector<std::unique_ptr<Daemon>> daemons;

  explicit Fleet(int n, std::vector<std::string> extra = {}) {
    for (int i = 0; i < n; ++i) daemons.push_back(start(i, extra));
  }
  std::unique_ptr<Daemon> start(int i, const std::vector<std::string>& extra) {
    std::vector<std::string> args{"--listen", "127.0.0.1:0", "--providers", "sendgrid,mailgun",
                                  "--sendgrid-base-url", sendgrid.base_url(), "--mailgun-base-url", mailgun.base_url(),
                                  "--mailgun-domain", fakes::kMailgunDomain, "--state-store", redis.url(),
                                  "--audit-log", dir.file("audit-" + std::to_string(i) + ".log")};
    args.insert(args.end(), extra.begin(), extra.end());
    auto d = std::make_unique<Daemon>(args, std::vector<std::string>{std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey,
                                                                     std::string("MAILGUN_API_KEY=") + fakes::kMailgunKey});
    REQUIRE(d->port() > 0);
    return d;
  }
  httplib::Result send(int i, httplib::Headers headers = {}) {
    auto c = daemons.at(static_cast<std::size_t>(i))->client();
    return c.Post("/v1/send", headers, fakes::sample_request().dump(), "application/json");
  }
  json providers(int i) { return json::parse(daemons.at(static_cast<std::size_t>(i))->client().Get("/v1/providers")->body); }
};

}  // namespace

TEST_CASE("fleet: one Idempotency-Key on two instances is one provider call", "[e2e][fleet]") {
  Fleet f(2);
  fakes::FakeReply slow;
  slow.delay = milliseconds(1000);
  f.sendgrid.push(slow);
  httplib::Headers key{{"Idempotency-Key", "order-4711"}};
  std::unique_ptr<httplib::Result> first_result;
  std::thread t([&] { first_result = std::make_unique<httplib::Result>(f.send(0, key)); });
  for (int i = 0; i < 500 && f.sendgrid.count() == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  REQUIRE(f.sendgrid.count() == 1);
  auto twin = f.send(1, key);  // while the first is still at SendGrid
  REQUIRE(twin);
  CHECK(twin->status == 409);
  t.join();
  REQUIRE(first_result);
  httplib::Result& first = *first_result;
  REQUIRE(first);
  REQUIRE(first->status == 200);
  auto replay = f.send(1, key);
  REQUIRE(replay);
  CHECK(replay->status == 200);
  CHECK(replay->get_header_value("Idempotent-Replayed") == "true");
  CHECK(json::parse(replay->body)["provider_message_id"] == json::parse(first->body)["provider_message_id"]);
  CHECK(f.sendgrid.count() == 1);
}

TEST_CASE("fleet: SendGrid switched off on one instance, the others follow within a second", "[e2e][fleet][control]") {
  Fleet f(3);
  auto off = f.daemons[0]->client().Patch("/v1/providers/sendgrid",
                                          json{{"enabled", false}, {"reason", "SendGrid incident 1234"}}.dump(),
                                          "application/json");
  REQUIRE(off);
  REQUIRE(off->status == 200);
  const auto changed = Clock::now();
  for (int i : {1, 2}) {
    bool followed = false;
    while (!followed && Clock::now() - changed < std::chrono::seconds(3)) {
      followed = f.providers(i)["providers"][0]["enabled"] == false;
      if (!followed) std::this_thread::sleep_for(milliseconds(20));
    }
    CHECK(followed);
  }
  CHECK(Clock::now() - changed < std::chrono::seconds(1));  // instances read the store every 250 ms
  for (int i : {1, 2}) {
    auto sent = f.send(i);
    REQUIRE(sent);
    CHECK(json::parse(sent->body)["provider"] == "mailgun");
    CHECK(f.providers(i)["providers"][0]["reason"] == "SendGrid incident 1234");
  }
  CHECK(f.sendgrid.count() == 0);
  // And back, from another instance.
  REQUIRE(f.daemons[2]->client().Patch("/v1/providers/sendgrid", json{{"enabled", true}}.dump(), "application/json")->status == 200);
  bool back = false;
  for (int i = 0; i < 150 && !back; ++i) {  // at most 3 s
    back = f.providers(0)["providers"][0]["enabled"] == true;
    if (!back) std::this_thread::sleep_for(milliseconds(20));
  }
  CHECK(back);
}

TEST_CASE("fleet: a rate limit is held across instances", "[e2e][fleet][rate]") {
  Fleet f(3, {"--rate-limits", "*=2/m"});  // a burst of 1, then one every 30 s, for the whole fleet
  auto first = f.send(0);
  REQUIRE(first);
  CHECK(first->status == 200);
  for (int i : {1, 2}) {
    auto limited = f.send(i);
    REQUIRE(limited);
    CHECK(limited->status == 429);
    CHECK(json::parse(limited->body)["error"]["code"] == "rate_limited");
    CHECK(std::stoi(limited->get_header_value("Retry-After")) >= 29);
  }
  CHECK(f.sendgrid.count() == 1);
}

TEST_CASE("fleet: Redis killed and restarted under load: every request answered, keys work again", "[e2e][fleet][redis]") {
  Fleet f(1, {"--state-store-timeout-ms", "100"});
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, unavailable{0}, other{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      auto client = f.daemons[0]->client();
      client.set_read_timeout(5, 0);
      for (int n = 0; n < 2000 && !stop; ++n) {
        httplib::Headers headers;
        if (c % 2 == 0) headers.emplace("Idempotency-Key", "load-" + std::to_string(c) + "-" + std::to_string(n));
        auto r = client.Post("/v1/send", headers, fakes::sample_request().dump(), "application/json");
        if (!r) ++failed;
        else if (r->status == 200) ++ok;
        else if (r->status == 503 && json::parse(r->body)["error"]["code"] == "state_store_unavailable") ++unavailable;
        else ++other;
      }
    });
  }
  std::this_thread::sleep_for(milliseconds(300));
  f.redis.kill();
  std::this_thread::sleep_for(milliseconds(700));
  const int refused_while_down = unavailable;
  f.redis.restart();
  std::this_thread::sleep_for(milliseconds(700));
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(failed == 0);   // no request hung past 5 s or lost its connection
  CHECK(other == 0);
  CHECK(refused_while_down > 0);  // keyed sends were refused while Redis was away
  CHECK(ok > 0);
  // Back by itself: a keyed send goes through, the gauge says so.
  auto again = f.send(0, {{"Idempotency-Key", "after-the-outage"}});
  REQUIRE(again);
  CHECK(again->status == 200);
  const std::string metrics = f.daemons[0]->client().Get("/metrics")->body;
  CHECK(metrics.find("\nmailrelay_state_store_up 1\n") != std::string::npos);
  CHECK(metrics.find("\nmailrelay_state_store_errors_total 0\n") == std::string::npos);
  CHECK(f.daemons[0]->stop() == 0);
  const std::string err = f.daemons[0]->err();
  CHECK(err.find("unavailable") != std::string::npos);
  CHECK(err.find("available again") != std::string::npos);
}

TEST_CASE("fleet: an instance restarted remembers its keys, audit lines reach the stream", "[e2e][fleet][redis]") {
  Fleet f(1, {"--audit-stream", "redis"});
  httplib::Headers key{{"Idempotency-Key", "order-99"}};
  auto first = f.send(0, key);
  REQUIRE(first);
  REQUIRE(first->status == 200);
  REQUIRE(f.daemons[0]->stop() == 0);
  f.daemons[0] = f.start(0, {"--audit-stream", "redis"});
  auto replay = f.send(0, key);
  REQUIRE(replay);
  CHECK(replay->status == 200);
  CHECK(replay->get_header_value("Idempotent-Replayed") == "true");
  CHECK(f.sendgrid.count() == 1);
  REQUIRE(f.daemons[0]->stop() == 0);
  // attempt + request for the first, request for the replay: the file and the stream agree.
  CHECK(f.redis.cli({"XLEN", "mailrelay:audit"}) == "3");
  CHECK(f.redis.cli({"XRANGE", "mailrelay:audit", "-", "+"}).find("\"outcome\":\"replayed\"") != std::string::npos);
}

TEST_CASE("fleet: sends waiting on a frozen Redis do not hold the event loop: /healthz answers at once", "[e2e][fleet][redis]") {
  // One event loop, 16 keyed sends stuck on a Redis that stopped answering (SIGSTOP: the
  // connection stays open and silent). With a blocking client they would block the loop's thread.
  Fleet f(1, {"--state-store-timeout-ms", "2000", "--event-threads", "1"});
  REQUIRE(f.send(0, {{"Idempotency-Key", "warm"}})->status == 200);  // a pooled connection exists
  REQUIRE(::kill(f.redis.pid(), SIGSTOP) == 0);
  std::vector<std::thread> stuck;
  std::atomic<int> unavailable{0};
  for (int i = 0; i < 16; ++i) {
    stuck.emplace_back([&, i] {
      auto r = f.send(0, {{"Idempotency-Key", "frozen-" + std::to_string(i)}});
      if (r && r->status == 503) ++unavailable;
    });
  }
  std::this_thread::sleep_for(milliseconds(300));  // they are all waiting on Redis now
  std::vector<double> ms;
  auto client = f.daemons[0]->client();
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    auto r = client.Get("/healthz");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  ::kill(f.redis.pid(), SIGCONT);
  for (auto& t : stuck) t.join();
  std::sort(ms.begin(), ms.end());
  INFO("/healthz worst " << ms.back() << " ms while 16 sends waited on Redis");
  CHECK(ms.back() < 1000);  // a blocked loop would answer after the 2 s store timeout
  CHECK(ms[2] < 100);
  CHECK(f.daemons[0]->stop() == 0);
}
