#include <atomic>
#include <catch2/catch.hpp>

#include <spdlog/sinks/ostream_sink.h>

#include <sstream>
#include <thread>

#include "circuit_breaker.h"
#include "fake_clock.h"

using namespace mailrelay;
using std::chrono::milliseconds;

namespace {

AttemptResult outcome(AttemptOutcome o, int status = 0, std::optional<milliseconds> retry_after = std::nullopt) {
  AttemptResult r;
  r.outcome = o;
  r.http_status = status;
  r.error = status ? "HTTP " + std::to_string(status) : "";
  r.retry_after = retry_after;
  r.throttled = status == 429;
  return r;
}

struct Fixture {
  fakes::FakeClock clock;
  std::ostringstream log_text;
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text));
  ProviderHealth health{BreakerSettings{}, clock, *log};  // 5 failures, 5 s doubling to 5 min

  ProviderHealth::Admission last;  // of "sendgrid"

  bool admit(const std::string& p = "sendgrid") {
    auto a = health.admit(p);
    if (p == "sendgrid") last = a;
    return a.admitted;
  }
  // The result of the last admitted attempt.
  void record(const AttemptResult& r) { health.record("sendgrid", last, r); }
  void fail(int n, const std::string& p = "sendgrid") {
    for (int i = 0; i < n; ++i) {
      auto a = health.admit(p);
      REQUIRE(a);
      health.record(p, a, outcome(AttemptOutcome::kError, 503));
    }
  }
  int count(const std::string& text) const {
    const std::string all = log_text.str();
    int n = 0;
    for (auto at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++n;
    return n;
  }
};

}  // namespace

TEST_CASE("the breaker opens after 5 consecutive failures and skips with a reason", "[circuit_breaker]") {
  Fixture f;
  f.fail(4);
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
  f.fail(1);
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  auto a = f.health.admit("sendgrid");
  CHECK_FALSE(a);
  CHECK_THAT(a.reason, Catch::Contains("circuit open after 5 consecutive failures"));
  CHECK(f.health.wait("sendgrid") == milliseconds(5000));
  CHECK(f.admit("mailgun"));  // per provider
  CHECK_THAT(f.log_text.str(), Catch::Contains("provider sendgrid: circuit closed -> open"));
}

TEST_CASE("successes and rejections reset the count", "[circuit_breaker]") {
  Fixture f;
  f.fail(4);
  REQUIRE(f.admit());
  f.record(outcome(AttemptOutcome::kRejected, 400));
  f.fail(4);
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
}

TEST_CASE("half-open: one probe at a time, success closes, failure reopens for twice as long", "[circuit_breaker]") {
  Fixture f;
  f.fail(5);
  f.clock.advance(milliseconds(4999));
  CHECK_FALSE(f.admit());
  f.clock.advance(milliseconds(1));
  CHECK(f.health.state("sendgrid") == CircuitState::kHalfOpen);
  REQUIRE(f.admit());        // the probe
  CHECK_FALSE(f.admit());    // no second probe while it runs
  f.record(outcome(AttemptOutcome::kTimeout));
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  CHECK(f.health.wait("sendgrid") == milliseconds(10000));
  f.clock.advance(milliseconds(10000));
  REQUIRE(f.admit());
  f.record(outcome(AttemptOutcome::kSent, 202));
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
  // The next trip starts again from the base cool-down.
  f.fail(5);
  CHECK(f.health.wait("sendgrid") == milliseconds(5000));
}

TEST_CASE("cool-down doubles on repeated trips up to 5 minutes", "[circuit_breaker]") {
  Fixture f;
  f.fail(5);
  std::vector<long long> cooldowns;
  for (int i = 0; i < 8; ++i) {
    cooldowns.push_back(f.health.wait("sendgrid").count());
    f.clock.advance(f.health.wait("sendgrid"));
    REQUIRE(f.admit());
    f.record(outcome(AttemptOutcome::kError, 500));
  }
  CHECK(cooldowns == std::vector<long long>{5000, 10000, 20000, 40000, 80000, 160000, 300000, 300000});
}

TEST_CASE("429 with Retry-After parks the provider exactly that long", "[circuit_breaker]") {
  Fixture f;
  REQUIRE(f.admit());
  f.record(outcome(AttemptOutcome::kError, 429, milliseconds(7000)));
  CHECK(f.health.state("sendgrid") == CircuitState::kParked);
  auto a = f.health.admit("sendgrid");
  CHECK_FALSE(a);
  CHECK_THAT(a.reason, Catch::Contains("429"));
  f.clock.advance(milliseconds(6999));
  CHECK_FALSE(f.admit());
  f.clock.advance(milliseconds(1));
  CHECK(f.admit());
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
}

TEST_CASE("a 429 asking for an hour parks the provider 5 minutes (README 'Provider health and the retry budget')", "[circuit_breaker]") {
  Fixture f;
  REQUIRE(f.admit());
  f.record(outcome(AttemptOutcome::kError, 429, std::chrono::hours(1)));
  CHECK(f.health.wait("sendgrid") == milliseconds(300000));
  f.clock.advance(milliseconds(300000));
  CHECK(f.admit());
}

TEST_CASE("late failures of attempts admitted before the trip neither trip again nor extend the cool-down", "[circuit_breaker]") {
  Fixture f;
  // 64 requests admitted while the circuit is closed, all failing (a 1 s outage under load).
  std::vector<ProviderHealth::Admission> admitted;
  for (int i = 0; i < 64; ++i) admitted.push_back(f.health.admit("sendgrid"));
  for (auto& a : admitted) {
    REQUIRE(a);
    f.health.record("sendgrid", a, outcome(AttemptOutcome::kError, 503));
  }
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  CHECK(f.count("closed -> open") == 1);
  CHECK(f.health.wait("sendgrid") == milliseconds(5000));  // not doubled 59 times
  // The probe after the cool-down closes it: the provider carries traffic again 5 s later.
  f.clock.advance(milliseconds(5000));
  REQUIRE(f.admit());
  f.record(outcome(AttemptOutcome::kSent, 202));
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
}

TEST_CASE("half-open: only the probe's result decides, stale results are ignored", "[circuit_breaker]") {
  Fixture f;
  auto early_ok = f.health.admit("sendgrid");    // admitted before the trip, answers late
  auto early_fail = f.health.admit("sendgrid");
  f.fail(5);
  f.clock.advance(milliseconds(5000));
  CHECK(f.health.state("sendgrid") == CircuitState::kHalfOpen);
  auto probe = f.health.admit("sendgrid");
  REQUIRE(probe);
  CHECK(probe.probe);
  f.health.record("sendgrid", early_fail, outcome(AttemptOutcome::kError, 503));
  CHECK(f.health.state("sendgrid") == CircuitState::kHalfOpen);  // a stale failure reopens nothing
  f.health.record("sendgrid", early_ok, outcome(AttemptOutcome::kSent, 202));
  CHECK(f.health.state("sendgrid") == CircuitState::kHalfOpen);  // a stale success closes nothing
  CHECK_FALSE(f.health.admit("sendgrid"));  // the probe is still the only one
  f.health.record("sendgrid", probe, outcome(AttemptOutcome::kError, 503));
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  CHECK(f.health.wait("sendgrid") == milliseconds(10000));
  CHECK(f.count("-> open") == 2);  // the trip and the failed probe, nothing else
}

TEST_CASE("concurrent failures from many threads trip the circuit exactly once", "[circuit_breaker]") {
  Fixture f;
  std::vector<std::thread> threads;
  std::atomic<int> admitted{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto a = f.health.admit("sendgrid");
        if (!a) continue;
        ++admitted;
        f.health.record("sendgrid", a, outcome(AttemptOutcome::kError, 503));
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(admitted >= 5);
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  CHECK(f.count("closed -> open") == 1);
  CHECK(f.health.wait("sendgrid") == milliseconds(5000));
}
