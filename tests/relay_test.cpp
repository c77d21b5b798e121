#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <random>

#include <spdlog/sinks/null_sink.h>

#include "fake_clock.h"
#include "fake_transport.h"
#include "http_provider.h"
#include "mailgun_provider.h"
#include "relay.h"
#include "sendgrid_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using fakes::failure;
using fakes::http;
using std::chrono::milliseconds;

namespace {

// Real providers and policy over a scripted transport and a fake clock: only I/O is faked.
// Records the attempt notifications, in order, together with how many calls the transport had
// seen at that moment: the notification must come before the call.
struct Observer : AttemptObserver {
  fakes::FakeTransport* transport = nullptr;
  std::vector<std::string> seen;
  bool refuse = false;  // the audit log cannot write: the relay must not call the provider
  bool before_attempt(const std::string& id, const std::string& provider, int try_number) override {
    seen.push_back(id + " " + provider + " " + std::to_string(try_number) + " after " +
                   std::to_string(transport->requests().size()) + " calls");
    return !refuse;
  }
};

struct Harness {
  fakes::FakeClock clock;
  fakes::FakeTransport transport{clock};
  HttpProvider sendgrid{"sendgrid", std::make_unique<SendGridProvider>("https://sg.test", "k"), transport};
  HttpProvider mailgun{"mailgun", std::make_unique<MailgunProvider>("https://mg.test", "mg.example.com", "k"), transport};
  RelaySettings settings;
  Email email = parse_email(fakes::sample_request().dump()).value();
  Observer observer;
  ProviderHealth* health = nullptr;

  RelayResult run() {
    observer.transport = &transport;
    Relay relay({&sendgrid, &mailgun}, settings, clock, health, {&observer}, [] { return 0.5; });
    return relay.send(email, "req", clock.now());
  }
};

const std::string kMailgunOk = R"({"id":"<1@mg.example.com>","message":"Queued. Thank you."})";

}  // namespace

TEST_CASE("first provider accepts with one attempt and no retries", "[relay]") {
  Harness h;
  h.transport.push(http(202, "", {{"x-message-id", "sg-1"}}, milliseconds(40)));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAccepted);
  REQUIRE(r.attempts.size() == 1);
  CHECK(r.accepted()->provider == "sendgrid");
  CHECK(r.accepted()->result.message_id == "sg-1");
  CHECK(r.attempts[0].latency_ms == Approx(40));
  CHECK(r.retries() == 0);
}

TEST_CASE("503 retries once with backoff, then fails over to Mailgun", "[relay]") {
  Harness h;
  h.transport.push(http(503, "Service Unavailable"));
  h.transport.push(http(503, "Service Unavailable"));
  h.transport.push(http(200, kMailgunOk));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAccepted);
  REQUIRE(r.attempts.size() == 3);
  CHECK(r.attempts[0].provider == "sendgrid");
  CHECK(r.attempts[0].try_number == 1);
  CHECK(r.attempts[1].try_number == 2);
  CHECK(r.attempts[2].provider == "mailgun");
  CHECK(r.accepted()->result.message_id == "<1@mg.example.com>");
  CHECK(r.retries() == 2);
  CHECK(h.clock.sleeps() == std::vector<milliseconds>{milliseconds(75)});  // 100 ms ceiling, jitter 0.5
  CHECK(h.transport.requests()[2].url == "https://mg.test/v3/mg.example.com/messages");
  CHECK(h.observer.seen == std::vector<std::string>{"req sendgrid 1 after 0 calls", "req sendgrid 2 after 1 calls",
                                                    "req mailgun 1 after 2 calls"});
}

TEST_CASE("400 is a rejection: no retry on the same provider, straight to the next", "[relay]") {
  Harness h;
  h.transport.push(http(400, R"({"errors":[{"message":"bad"}]})"));
  h.transport.push(http(200, kMailgunOk));
  auto r = h.run();
  REQUIRE(r.attempts.size() == 2);
  CHECK(r.attempts[0].result.outcome == AttemptOutcome::kRejected);
  CHECK(r.attempts[1].provider == "mailgun");
  CHECK(h.clock.sleeps().empty());
}

TEST_CASE("everyone refuses: all_providers_failed with every attempt listed", "[relay]") {
  Harness h;
  h.transport.push(http(401, R"({"errors":[{"message":"bad key"}]})"));
  h.transport.push(http(401, R"({"errors":[{"message":"bad key"}]})"));
  h.transport.push(http(401, "Forbidden"));
  h.transport.push(http(401, "Forbidden"));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAllProvidersFailed);
  CHECK(r.attempts.size() == 4);
  CHECK(r.accepted() == nullptr);
  CHECK(r.attempts[3].result.error == "Forbidden");
}

TEST_CASE("429 with Retry-After waits exactly that long when it fits", "[relay]") {
  Harness h;
  h.transport.push(http(429, "", {{"retry-after", "2"}}));
  h.transport.push(http(202));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAccepted);
  CHECK(r.attempts.size() == 2);
  CHECK(h.clock.sleeps() == std::vector<milliseconds>{milliseconds(2000)});
}

TEST_CASE("429 with a Retry-After beyond the deadline goes to the next provider at once", "[relay]") {
  Harness h;
  h.transport.push(http(429, "", {{"retry-after", "60"}}));
  h.transport.push(http(200, kMailgunOk));
  auto r = h.run();
  REQUIRE(r.attempts.size() == 2);
  CHECK(r.attempts[1].provider == "mailgun");
  CHECK(h.clock.sleeps().empty());
}

TEST_CASE("a hanging provider times out (ambiguous) and the relay fails over", "[relay]") {
  Harness h;
  h.transport.push(http(202, "", {}, milliseconds(60000)));  // answers far too late
  h.transport.push(http(200, kMailgunOk));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAccepted);
  REQUIRE(r.attempts.size() == 2);
  CHECK(r.attempts[0].result.outcome == AttemptOutcome::kTimeout);
  CHECK(r.attempts[0].result.may_have_been_sent);
  CHECK(r.attempts[0].latency_ms == Approx(3000));
  CHECK(h.transport.timeouts()[0] == milliseconds(3000));
}

TEST_CASE("failover-on-timeout=false stops after an ambiguous timeout", "[relay]") {
  Harness h;
  h.settings.policy.failover_on_timeout = false;
  h.transport.push(http(202, "", {}, milliseconds(60000)));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAmbiguousTimeout);
  CHECK(r.attempts.size() == 1);
  CHECK(h.transport.requests().size() == 1);
}

TEST_CASE("connection refused is not ambiguous: retried, then failed over", "[relay]") {
  Harness h;
  h.settings.policy.failover_on_timeout = false;
  h.transport.push(failure(TransportFailure::kConnect, false));
  h.transport.push(failure(TransportFailure::kConnect, false));
  h.transport.push(http(200, kMailgunOk));
  auto r = h.run();
  CHECK(r.reason == StopReason::kAccepted);
  CHECK(r.attempts.size() == 3);
  CHECK_FALSE(r.attempts[0].result.may_have_been_sent);
  CHECK_THAT(r.attempts[0].result.error, Catch::StartsWith("connect:"));
}

TEST_CASE("one deadline for the whole request, the last attempt gets only what is left", "[relay]") {
  Harness h;
  h.settings.deadline = milliseconds(5000);
  h.transport.push(http(202, "", {}, milliseconds(60000)));  // sendgrid hangs: 3000 ms used
  h.transport.push(http(200, kMailgunOk, {}, milliseconds(60000)));  // mailgun hangs too
  auto r = h.run();
  CHECK(r.reason == StopReason::kDeadline);
  REQUIRE(r.attempts.size() == 2);
  CHECK(h.transport.timeouts() == std::vector<milliseconds>{milliseconds(3000), milliseconds(2000)});
}

TEST_CASE("a deadline already spent makes no call at all", "[relay]") {
  Harness h;
  Relay relay({&h.sendgrid}, h.settings, h.clock);
  auto started = h.clock.now();
  h.clock.advance(milliseconds(10001));
  auto r = relay.send(h.email, "req", started);
  CHECK(r.reason == StopReason::kDeadline);
  CHECK(r.attempts.empty());
  CHECK(h.transport.requests().empty());
}

TEST_CASE("an open circuit skips the provider without a network call, then a probe closes it", "[relay]") {
  Harness h;
  auto log = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  ProviderHealth health(BreakerSettings{}, h.clock, *log);
  h.health = &health;
  h.settings.policy.max_retries = 0;
  for (int i = 0; i < 5; ++i) {
    h.transport.push(http(503, "Service Unavailable"));
    h.transport.push(http(200, kMailgunOk));
    REQUIRE(h.run().reason == StopReason::kAccepted);
  }
  REQUIRE(h.transport.requests().size() == 10);
  h.transport.push(http(200, kMailgunOk));
  auto r = h.run();
  CHECK(h.transport.requests().size() == 11);  // only Mailgun was called
  REQUIRE(r.attempts.size() == 2);
  CHECK(r.attempts[0].provider == "sendgrid");
  CHECK(r.attempts[0].result.outcome == AttemptOutcome::kSkipped);
  CHECK_THAT(r.attempts[0].result.error, Catch::Contains("circuit open"));
  CHECK(r.accepted()->provider == "mailgun");

  h.clock.advance(milliseconds(5000));
  h.transport.push(http(202, "", {{"x-message-id", "probe"}}));
  auto probe = h.run();
  CHECK(probe.accepted()->provider == "sendgrid");
  CHECK(health.state("sendgrid") == CircuitState::kClosed);
}

TEST_CASE("every provider skipped: no_provider_available, nothing sent", "[relay]") {
  Harness h;
  auto log = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  ProviderHealth health(BreakerSettings{}, h.clock, *log);
  h.health = &health;
  h.transport.push(http(429, "", {{"retry-after", "60"}}));
  h.transport.push(http(429, "", {{"retry-after", "60"}}));
  CHECK(h.run().reason == StopReason::kAllProvidersFailed);
  auto r = h.run();
  CHECK(r.reason == StopReason::kNoProviderAvailable);
  CHECK(r.attempts.size() == 2);
  CHECK(h.transport.requests().size() == 2);
  CHECK(stop_reason_label(r) == "no_provider_available");
}

namespace {
// How often each provider went first over `n` sends through one Relay.
std::map<std::string, int> first_choices(Harness& h, Relay& relay, int n) {
  std::map<std::string, int> firsts;
  for (int i = 0; i < n; ++i) {
    h.transport.push(http(202));
    auto r = relay.send(h.email, "req", h.clock.now());
    ++firsts[r.attempts.at(0).provider];
  }
  return firsts;
}
}  // namespace

TEST_CASE("round-robin alternates the first provider exactly", "[relay][strategy]") {
  Harness h;
  h.settings.strategy = Strategy::kRoundRobin;
  Relay relay({&h.sendgrid, &h.mailgun}, h.settings, h.clock);
  auto firsts = first_choices(h, relay, 1000);
  CHECK(firsts["sendgrid"] == 500);
  CHECK(firsts["mailgun"] == 500);
}

TEST_CASE("weighted picks the first provider by weight (3:1 within 5 points over 1000)", "[relay][strategy]") {
  Harness h;
  h.settings.strategy = Strategy::kWeighted;
  h.settings.weights = {3, 1};
  std::mt19937_64 engine(42);
  Relay relay({&h.sendgrid, &h.mailgun}, h.settings, h.clock, nullptr, {},
              [&] { return std::uniform_real_distribution<double>(0, 1)(engine); });
  auto firsts = first_choices(h, relay, 1000);
  CHECK(firsts["sendgrid"] + firsts["mailgun"] == 1000);
  CHECK(firsts["sendgrid"] >= 700);
  CHECK(firsts["sendgrid"] <= 800);
}

TEST_CASE("the rest of the order stays the fallback under any strategy", "[relay][strategy]") {
  Harness h;
  h.settings.strategy = Strategy::kRoundRobin;
  h.settings.policy.max_retries = 0;
  Relay relay({&h.sendgrid, &h.mailgun}, h.settings, h.clock);
  h.transport.push(http(202));  // first send: sendgrid first, accepted
  relay.send(h.email, "a", h.clock.now());
  h.transport.push(http(503));  // second send: mailgun first, fails; sendgrid takes it
  h.transport.push(http(202));
  auto r = relay.send(h.email, "b", h.clock.now());
  REQUIRE(r.attempts.size() == 2);
  CHECK(r.attempts[0].provider == "mailgun");
  CHECK(r.accepted()->provider == "sendgrid");
}

TEST_CASE("the retry budget bounds extra calls during an outage", "[relay][retry_budget]") {
  Harness h;
  RetryBudget budget(RetryBudgetSettings{}, h.clock);  // 20% of requests, at least 3 per window
  Relay relay({&h.sendgrid, &h.mailgun}, h.settings, h.clock, nullptr, {}, [] { return 0.5; }, &budget);
  // SendGrid is down, Mailgun is up. Every request may retry SendGrid once (max_retries 1).
  h.transport.responder = [](const HttpRequest& r) {
    return r.url.find("sg.test") != std::string::npos ? http(503, "down") : http(200, kMailgunOk);
  };
  for (int i = 0; i < 100; ++i) REQUIRE(relay.send(h.email, "req", h.clock.now()).reason == StopReason::kAccepted);
  auto requests = h.transport.requests();
  auto sendgrid_calls = std::count_if(requests.begin(), requests.end(),
                                      [](const HttpRequest& r) { return r.url.find("sg.test") != std::string::npos; });
  CHECK(sendgrid_calls >= 100 + 3);   // the minimum is always allowed
  CHECK(sendgrid_calls <= 100 + 20);  // 20% of 100 requests; without the budget it would be 200
}

TEST_CASE("a 502 from a provider's gateway is ambiguous: never retried there, stop or fail over (README 'Provider health and the retry budget')", "[relay]") {
  Harness h;
  SECTION("failover on (the default): straight to Mailgun, no retry at SendGrid") {
    h.transport.push(http(502, "Bad Gateway"));
    h.transport.push(http(200, kMailgunOk));
    auto r = h.run();
    CHECK(r.reason == StopReason::kAccepted);
    REQUIRE(r.attempts.size() == 2);
    CHECK(r.attempts[0].result.may_have_been_sent);
    CHECK(r.attempts[1].provider == "mailgun");
  }
  SECTION("--failover-on-timeout=false: stop after it") {
    h.settings.policy.failover_on_timeout = false;
    h.transport.push(http(504, "Gateway Timeout"));
    auto r = h.run();
    CHECK(r.reason == StopReason::kAmbiguousTimeout);
    CHECK(h.transport.requests().size() == 1);
  }
}

TEST_CASE("sandbox: a provider without a test mode is skipped with that reason, the next one sends in its own", "[relay]") {
  struct NoTestMode : EmailProvider {
    std::string name_ = "plain";
    int calls = 0;
    const std::string& name() const override { return name_; }
    AttemptResult send(const Email&, std::string_view, milliseconds) override {
      ++calls;
      return {};
    }
  } plain;
  Harness h;
  h.email.sandbox = true;
  h.observer.transport = &h.transport;
  h.transport.push(http(200, ""));  // SendGrid answers a sandboxed send with 200
  Relay relay({&plain, &h.sendgrid}, h.settings, h.clock, nullptr, {&h.observer}, [] { return 0.5; });
  auto r = relay.send(h.email, "req", h.clock.now());
  CHECK(r.reason == StopReason::kAccepted);
  REQUIRE(r.attempts.size() == 2);
  CHECK(r.attempts[0].result.outcome == AttemptOutcome::kSkipped);
  CHECK(r.attempts[0].result.error == "no test mode for a sandbox message");
  CHECK(plain.calls == 0);
  REQUIRE(h.transport.requests().size() == 1);
  CHECK(nlohmann::json::parse(h.transport.requests()[0].body)["mail_settings"]["sandbox_mode"]["enable"] == true);
}

namespace {

// A provider whose speed and answer the simulation sets; its call takes `latency` of fake time.
struct SimulatedProvider final : EmailProvider {
  SimulatedProvider(std::string n, fakes::FakeClock& c) : name_(std::move(n)), clock(c) {}
  const std::string& name() const override { return name_; }
  bool supports_sandbox() const override { return true; }
  AttemptResult send(const Email& email, std::string_view, milliseconds) override {
    std::size_t bytes = 0;
    for (const Attachment& a : email.attachments) bytes += a.content.size();
    clock.advance(latency + per_mib * static_cast<long>(bytes >> 20) + (email.sandbox ? sandbox_latency : milliseconds(0)));
    AttemptResult r;
    r.outcome = outcome;
    r.http_status = outcome == AttemptOutcome::kSent ? 202 : 500;
    return r;
  }
  std::string name_;
  fakes::FakeClock& clock;
  milliseconds latency{40};
  milliseconds per_mib{0};          // upload time
  milliseconds sandbox_latency{0};  // a test mode's own speed
  AttemptOutcome outcome = AttemptOutcome::kSent;
};

struct Simulation {
  fakes::FakeClock clock;
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>());
  ProviderHealth health{BreakerSettings{}, clock, *log};
  SimulatedProvider a{"sendgrid", clock}, b{"mailgun", clock};
  Relay relay{{&a, &b}, adaptive(), clock, &health};
  Email email = parse_email(fakes::sample_request().dump()).value();

  static RelaySettings adaptive() {
    RelaySettings s;
    s.strategy = Strategy::kAdaptive;
    return s;
  }
  // `rate` requests a second for `seconds` of fake time: the share that went to `a` first.
  double share_of_a(int seconds, int rate = 10) { return share_of_a(seconds, rate, email); }
  double share_of_a(int seconds, int rate, const Email& message) {
    int to_a = 0;
    for (int i = 0; i < seconds * rate; ++i) {
      RelayResult r = relay.send(message, "sim", clock.now());
      to_a += r.attempts.at(0).provider == "sendgrid" ? 1 : 0;
      clock.advance(milliseconds(1000 / rate));
    }
    return to_a / (seconds * static_cast<double>(rate));
  }
};

}  // namespace

TEST_CASE("adaptive: traffic moves away from a provider that slows down within seconds, and comes back", "[relay][adaptive]") {
  Simulation sim;
  sim.a.latency = milliseconds(40);
  sim.b.latency = milliseconds(60);
  sim.share_of_a(10);                 // both measured
  CHECK(sim.share_of_a(20) > 0.8);    // the faster one takes most (the other is measured now and then)
  sim.a.latency = milliseconds(800);  // sendgrid slows down
  CHECK(sim.share_of_a(2) <= 0.1);    // within two seconds (one slow call is enough)
  CHECK(sim.share_of_a(30) <= 0.05);  // and stays away (a probe every 20 sends: at most 1 in 20)
  const ProviderFigures slow = sim.health.figures("sendgrid");
  CHECK(slow.latency_ms > 60);
  sim.a.latency = milliseconds(20);   // recovered
  sim.share_of_a(20);                 // measured again by the probes (one every 2 s here)
  CHECK(sim.share_of_a(10) > 0.8);
  CHECK(sim.health.figures("sendgrid").latency_ms < 40);
}

TEST_CASE("adaptive: errors count, and an open or parked provider is never chosen first", "[relay][adaptive]") {
  Simulation sim;
  sim.a.latency = milliseconds(10);
  sim.b.latency = milliseconds(200);
  sim.share_of_a(5);
  CHECK(sim.share_of_a(5) > 0.8);
  // Fast failures: each is a failover (about an attempt timeout): sendgrid loses first place.
  sim.a.outcome = AttemptOutcome::kError;
  sim.share_of_a(1);
  CHECK(sim.health.figures("sendgrid").error_rate > 0.1);
  CHECK(sim.share_of_a(5) < 0.2);
  // Parked: never first, whatever its figures.
  sim.a.outcome = AttemptOutcome::kSent;
  ProviderHealth::Admission admission = sim.health.admit("sendgrid");
  AttemptResult throttled;
  throttled.outcome = AttemptOutcome::kError;
  throttled.throttled = true;
  throttled.retry_after = std::chrono::minutes(5);
  sim.health.record("sendgrid", admission, throttled);
  REQUIRE(sim.health.state("sendgrid") == CircuitState::kParked);
  CHECK(sim.share_of_a(60) == 0.0);
}

TEST_CASE("adaptive: with no figures yet the configured order decides", "[relay][adaptive]") {
  Simulation sim;
  RelayResult r = sim.relay.send(sim.email, "first", sim.clock.now());
  CHECK(r.attempts.at(0).provider == "sendgrid");
}

TEST_CASE("adaptive: a provider that recovers is first again within 10 s, the probes at most 1 in 20", "[relay][adaptive]") {
  Simulation sim;
  sim.a.latency = milliseconds(1);
  sim.b.latency = milliseconds(1);
  CHECK(sim.share_of_a(5, 40) > 0.9);  // equal: the configured order keeps it
  sim.a.latency = milliseconds(600);
  sim.share_of_a(1, 40);
  const double slowed = sim.share_of_a(20, 40);
  CHECK(slowed <= 0.05);  // the probes only: at most 1 in 20
  CHECK(slowed > 0);      // and at least one every few seconds
  sim.a.latency = milliseconds(1);
  sim.share_of_a(9, 40);
  CHECK(sim.share_of_a(1, 40) > 0.9);  // the tenth second after it recovered: first again
}

TEST_CASE("adaptive: large or sandbox messages do not move the traffic of small ones", "[relay][adaptive]") {
  Simulation sim;
  sim.a.latency = milliseconds(20);
  sim.b.latency = milliseconds(30);
  sim.a.per_mib = milliseconds(400);  // a slow upload path
  sim.a.sandbox_latency = milliseconds(2000);
  Email large = sim.email;
  large.attachments.push_back(Attachment{"big.bin", "application/octet-stream", std::string(5 << 20, 'x'), false, ""});
  Email sandbox = sim.email;
  sandbox.sandbox = true;
  CHECK(sim.share_of_a(5, 10) > 0.9);
  CHECK(sim.share_of_a(3, 2, large) < 0.5);  // large messages move to the faster upload
  CHECK(sim.share_of_a(3, 2, sandbox) > 0.9);  // not measured: they stay where they were
  CHECK(sim.share_of_a(5, 10) > 0.9);        // small ones never moved
  CHECK(sim.health.figures("sendgrid", 0).latency_ms < 30);
  CHECK(sim.health.figures("sendgrid", size_class(5 << 20)).latency_ms > 1000);
}
