// SendService: the whole send path from request to answer without HTTP, on a fake clock and a
// scripted transport: the status mapping (200, 4xx, 502, 503, 504), idempotency and the audit veto.
#include <catch2/catch.hpp>

#include <spdlog/sinks/null_sink.h>

#include "fake_clock.h"
#include "fake_transport.h"
#include "http_provider.h"
#include "mailgun_provider.h"
#include "send_service.h"
#include "sendgrid_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using fakes::failure;
using fakes::http;
using std::chrono::milliseconds;

namespace {

// Refuses to record attempts on demand: the audit log when its disk is full.
struct Recorder final : AttemptObserver {
  bool writable = true;
  bool before_attempt(const std::string&, const std::string&, int) override { return writable; }
};

struct Fixture {
  fakes::FakeClock clock;
  fakes::FakeTransport transport{clock};
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>());
  ProviderHealth health{BreakerSettings{}, clock, *log};
  Recorder recorder;
  Metrics metrics{"test"};
  MemoryStateStore store{clock};
  ProviderControl control{store, std::chrono::milliseconds(0)};
  Suppressions suppressions{store, "fake-recipient-key-0123456789"};
  SendService service{store, &control, &suppressions, metrics, 8};
  std::shared_ptr<Runtime> runtime = std::make_shared<Runtime>();

  explicit Fixture(RelaySettings settings = {}) {
    runtime->providers.push_back(std::make_unique<HttpProvider>(
        "sendgrid", std::make_unique<SendGridProvider>("https://sg.test", "k"), transport));
    runtime->providers.push_back(std::make_unique<HttpProvider>(
        "mailgun", std::make_unique<MailgunProvider>("https://mg.test", "mg.example.com", "k"), transport));
    runtime->relay = std::make_unique<Relay>(
        std::vector<EmailProvider*>{runtime->providers[0].get(), runtime->providers[1].get()}, settings, clock,
        &health, std::vector<AttemptObserver*>{&recorder}, [] { return 0.5; });
    runtime->health = &health;
    runtime->provider_names = {"sendgrid", "mailgun"};
  }
  SendReport send(std::optional<std::string> key = std::nullopt, std::string body = fakes::sample_request().dump()) {
    SendRequest r;
    r.request_id = "req-1";
    r.started = clock.now();
    r.content_type = "application/json";
    r.idempotency_key = std::move(key);
    r.body = std::move(body);
    return service.handle(*runtime, std::move(r));
  }
};

std::string code_of(const SendReport& r) { return r.body.contains("error") ? r.body["error"]["code"].get<std::string>() : ""; }

std::string header_of(const SendReport& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "";
}

const std::string kMailgunOk = R"({"id":"<1@mg.example.com>","message":"Queued. Thank you."})";

}  // namespace

TEST_CASE("send service: provider outcomes map to one answer, audit outcome and stop reason", "[send_service]") {
  Fixture f;
  SECTION("accepted by the first provider: 200 sent") {
    f.transport.push(http(202, "", {{"x-message-id", "sg-1"}}));
    auto r = f.send();
    CHECK(r.status == 200);
    CHECK(r.outcome == "sent");
    CHECK(r.body["provider_message_id"] == "sg-1");
    REQUIRE(r.relay);
    CHECK(r.relay->attempts.size() == 1);
  }
  SECTION("both refuse the message: 502 all_providers_failed, attempts listed") {
    f.transport.push(http(400, R"({"errors":[{"message":"bad"}]})"));
    f.transport.push(http(400, R"({"message":"bad"})"));
    auto r = f.send();
    CHECK(r.status == 502);
    CHECK(code_of(r) == "all_providers_failed");
    CHECK(r.body["attempts"].size() == 2);
  }
  SECTION("every provider parked after a 429: 503 no_provider_available with Retry-After") {
    for (const char* p : {"sendgrid", "mailgun"}) {
      auto a = f.health.admit(p);
      AttemptResult throttled;
      throttled.outcome = AttemptOutcome::kError;
      throttled.http_status = 429;
      throttled.throttled = true;
      throttled.retry_after = milliseconds(29500);
      f.health.record(p, a, throttled);
    }
    auto r = f.send();
    CHECK(r.status == 503);
    CHECK(code_of(r) == "no_provider_available");
    CHECK(header_of(r, "Retry-After") == "30");
    CHECK(f.transport.requests().empty());
  }
  SECTION("the attempt line cannot be written: 503 audit_unavailable and no provider call") {
    f.recorder.writable = false;
    auto r = f.send();
    CHECK(r.status == 503);
    CHECK(code_of(r) == "audit_unavailable");
    CHECK(header_of(r, "Retry-After") == "1");
    CHECK(f.transport.requests().empty());
    REQUIRE(r.relay);
    CHECK(stop_reason_label(*r.relay) == "audit_unavailable");
  }
  SECTION("not JSON: 400 with no provider call") {
    auto r = f.send(std::nullopt, "{not json");
    CHECK(r.status == 400);
    CHECK(code_of(r) == "invalid_request");
    CHECK(f.transport.requests().empty());
  }
}

TEST_CASE("send service: providers that hang past the deadline give 504 deadline_exceeded", "[send_service]") {
  RelaySettings settings;
  settings.deadline = milliseconds(5000);
  Fixture f(settings);
  f.transport.push(http(202, "", {}, milliseconds(60000)));  // sendgrid hangs: its 3 s attempt timeout
  f.transport.push(http(200, kMailgunOk, {}, milliseconds(60000)));  // mailgun hangs: the 2 s left
  auto r = f.send();
  CHECK(r.status == 504);
  CHECK(code_of(r) == "deadline_exceeded");
  CHECK(r.outcome == "deadline_exceeded");
  CHECK(r.body["attempts"].size() == 2);
}

TEST_CASE("send service: an ambiguous timeout without failover is 504 naming the provider", "[send_service]") {
  RelaySettings settings;
  settings.policy.failover_on_timeout = false;
  Fixture f(settings);
  f.transport.push(failure(TransportFailure::kTimeout, true, milliseconds(3000)));
  auto r = f.send();
  CHECK(r.status == 504);
  CHECK_THAT(r.body["error"]["message"].get<std::string>(), Catch::Contains("sendgrid") && Catch::Contains("may have accepted"));
  CHECK(f.transport.requests().size() == 1);
}

TEST_CASE("send service: a replay answers the stored JSON as it was, and sends nothing", "[send_service][idempotency]") {
  Fixture f;
  f.transport.push(http(202, "", {{"x-message-id", "sg-1"}}));
  auto first = f.send("k-1");
  REQUIRE(first.status == 200);
  auto again = f.send("k-1");
  CHECK(again.status == 200);
  CHECK(again.outcome == "replayed");
  CHECK(again.replay_of == "req-1");
  CHECK(header_of(again, "Idempotent-Replayed") == "true");
  CHECK(again.body == first.body);
  CHECK(f.transport.requests().size() == 1);
  auto other = f.send("k-1", fakes::sample_request().dump() + " ");
  CHECK(other.status == 422);
  CHECK(code_of(other) == "idempotency_mismatch");
}
