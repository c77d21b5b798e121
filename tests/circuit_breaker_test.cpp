#include <catch2/catch.hpp>

#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

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
  return r;
}

struct Fixture {
  fakes::FakeClock clock;
  std::ostringstream log_text;
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text));
  ProviderHealth health{BreakerSettings{}, clock, *log};  // 5 failures, 5 s doubling to 5 min

  bool admit(const std::string& p = "sendgrid") {
    std::string why;
    return health.admit(p, why);
  }
  void fail(int n, const std::string& p = "sendgrid") {
    for (int i = 0; i < n; ++i) {
      REQUIRE(admit(p));
      health.record(p, outcome(AttemptOutcome::kError, 503));
    }
  }
};

}  // namespace

TEST_CASE("the breaker opens after 5 consecutive failures and skips with a reason", "[circuit_breaker]") {
  Fixture f;
  f.fail(4);
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
  f.fail(1);
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  std::string why;
  CHECK_FALSE(f.health.admit("sendgrid", why));
  CHECK_THAT(why, Catch::Contains("circuit open after 5 consecutive failures"));
  CHECK(f.health.wait("sendgrid") == milliseconds(5000));
  CHECK(f.admit("mailgun"));  // per provider
  CHECK_THAT(f.log_text.str(), Catch::Contains("provider sendgrid: circuit closed -> open"));
}

TEST_CASE("successes and rejections reset the count", "[circuit_breaker]") {
  Fixture f;
  f.fail(4);
  REQUIRE(f.admit());
  f.health.record("sendgrid", outcome(AttemptOutcome::kRejected, 400));
  f.fail(4);
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
}

TEST_CASE("half-open: one probe at a time; success closes, failure reopens for twice as long", "[circuit_breaker]") {
  Fixture f;
  f.fail(5);
  f.clock.advance(milliseconds(4999));
  CHECK_FALSE(f.admit());
  f.clock.advance(milliseconds(1));
  CHECK(f.health.state("sendgrid") == CircuitState::kHalfOpen);
  REQUIRE(f.admit());        // the probe
  CHECK_FALSE(f.admit());    // no second probe while it runs
  f.health.record("sendgrid", outcome(AttemptOutcome::kTimeout));
  CHECK(f.health.state("sendgrid") == CircuitState::kOpen);
  CHECK(f.health.wait("sendgrid") == milliseconds(10000));
  f.clock.advance(milliseconds(10000));
  REQUIRE(f.admit());
  f.health.record("sendgrid", outcome(AttemptOutcome::kSent, 202));
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
    f.health.record("sendgrid", outcome(AttemptOutcome::kError, 500));
  }
  CHECK(cooldowns == std::vector<long long>{5000, 10000, 20000, 40000, 80000, 160000, 300000, 300000});
}

TEST_CASE("429 with Retry-After parks the provider exactly that long", "[circuit_breaker]") {
  Fixture f;
  REQUIRE(f.admit());
  f.health.record("sendgrid", outcome(AttemptOutcome::kError, 429, milliseconds(7000)));
  CHECK(f.health.state("sendgrid") == CircuitState::kParked);
  std::string why;
  CHECK_FALSE(f.health.admit("sendgrid", why));
  CHECK_THAT(why, Catch::Contains("429"));
  f.clock.advance(milliseconds(6999));
  CHECK_FALSE(f.admit());
  f.clock.advance(milliseconds(1));
  CHECK(f.admit());
  CHECK(f.health.state("sendgrid") == CircuitState::kClosed);
}
