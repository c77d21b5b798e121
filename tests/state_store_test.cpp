// StateStore: the same contract held by the in-process store and by Redis (a real redis-server on
// a free loopback port), then what only Redis has: two instances sharing keys, the store going
// away and coming back, claims of a crashed holder expiring, the password, the audit stream.
#include <signal.h>
#include <spdlog/sinks/null_sink.h>

#include <chrono>
#include <memory>
#include <thread>

#include <catch2/catch.hpp>

#include "fake_clock.h"
#include "redis_server.h"
#include "redis_state_store.h"
#include "hash.h"
#include "state_store.h"

using namespace mailrelay;
using Verdict = IdempotencyCache::Verdict;
using std::chrono::milliseconds;

namespace {

std::shared_ptr<spdlog::logger> quiet() {
  return std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>());
}

std::unique_ptr<RedisStateStore> redis_store(const fakes::RedisServer& server, std::string prefix = "test:",
                                             std::string password = "", std::size_t stream = 0) {
  static auto log = quiet();
  return std::move(RedisStateStore::open({server.url(), std::move(password), std::move(prefix), milliseconds(200), stream},
                                         *log).value());
}

void check_contract(StateStore& store) {
  SECTION("idempotency: first, in flight, mismatch, per client, replay") {
    auto first = store.begin_idempotent("billing", "k1", "digest-a", milliseconds(60000));
    REQUIRE(first);
    CHECK(first.value().verdict == Verdict::kProceed);
    CHECK(store.begin_idempotent("billing", "k1", "digest-a", milliseconds(60000)).value().verdict == Verdict::kInFlight);
    CHECK(store.begin_idempotent("billing", "k1", "digest-b", milliseconds(60000)).value().verdict == Verdict::kMismatch);
    CHECK(store.begin_idempotent("shop", "k1", "digest-a", milliseconds(60000)).value().verdict == Verdict::kProceed);
    store.complete_idempotent("billing", "k1", "digest-a", 200, nlohmann::ordered_json{{"status", "sent"}}, "req-1");
    auto replay = store.begin_idempotent("billing", "k1", "digest-a", milliseconds(60000));
    REQUIRE(replay);
    CHECK(replay.value().verdict == Verdict::kReplay);
    CHECK(replay.value().answer.status == 200);
    CHECK(replay.value().answer.body.dump() == "{\"status\":\"sent\"}");
    CHECK(replay.value().answer.request_id == "req-1");
    CHECK(store.begin_idempotent("billing", "k1", "digest-b", milliseconds(60000)).value().verdict == Verdict::kMismatch);
  }
  SECTION("idempotency: a released claim frees the key; an answered key is never released") {
    REQUIRE(store.begin_idempotent("", "k2", "a", milliseconds(60000)).value().verdict == Verdict::kProceed);
    store.release_idempotent("", "k2", "a");
    REQUIRE(store.begin_idempotent("", "k2", "b", milliseconds(60000)).value().verdict == Verdict::kProceed);
    store.complete_idempotent("", "k2", "b", 502, nlohmann::ordered_json::object(), "r");
    store.release_idempotent("", "k2", "b");
    auto again = store.begin_idempotent("", "k2", "b", milliseconds(60000));
    CHECK(again.value().verdict == Verdict::kReplay);
    CHECK(again.value().answer.status == 502);
  }
  SECTION("provider overrides: switches and order, read back") {
    CHECK(store.overrides().value().providers.empty());
    REQUIRE(store.set_provider("sendgrid", {false, "ops", "SendGrid incident 1234", "2026-12-03T06:00:00.000Z"}));
    REQUIRE(store.set_order({"mailgun", "sendgrid"}));
    auto read = store.overrides();
    REQUIRE(read);
    CHECK_FALSE(read.value().enabled("sendgrid"));
    CHECK(read.value().enabled("mailgun"));
    CHECK(read.value().providers.at("sendgrid").disabled_by == "ops");
    CHECK(read.value().providers.at("sendgrid").reason == "SendGrid incident 1234");
    CHECK(read.value().providers.at("sendgrid").since == "2026-12-03T06:00:00.000Z");
    CHECK(read.value().order == std::vector<std::string>{"mailgun", "sendgrid"});
    REQUIRE(store.set_order({}));
    REQUIRE(store.set_provider("sendgrid", {true, "ops", "over", "2026-12-03T07:00:00.000Z"}));
    CHECK(store.overrides().value().order.empty());
    CHECK(store.overrides().value().enabled("sendgrid"));
  }
  SECTION("rate: a burst of one second's worth, then refused with the wait") {
    RateLimit five_per_second{5, milliseconds(1000)};  // 200 ms apart, 5 at once
    int allowed = 0;
    RateVerdict refused;
    for (int i = 0; i < 8; ++i) {
      auto v = store.take("billing", five_per_second);
      REQUIRE(v);
      if (v.value().allowed) ++allowed;
      else refused = v.value();
    }
    // 5 in the burst; a sixth only if 200 ms passed meanwhile (a slow machine).
    CHECK(allowed >= 5);
    CHECK(allowed <= 6);
    CHECK_FALSE(refused.allowed);
    CHECK(refused.retry_after > milliseconds(0));
    CHECK(refused.retry_after <= milliseconds(200));
    CHECK(store.take("shop", five_per_second).value().allowed);  // buckets are per client
  }
  SECTION("suppressions: by hash, read in one call, removed once") {
    const std::string alice = suppression_hash("key-0123456789abcdef", "Alice@Example.org");
    const std::string bob = suppression_hash("key-0123456789abcdef", "bob@example.org");
    CHECK(alice == suppression_hash("key-0123456789abcdef", "alice@example.org"));  // case-insensitive
    CHECK(alice != suppression_hash("another-key-0123456", "alice@example.org"));   // keyed
    CHECK(alice.size() == 64);
    REQUIRE(store.suppress(alice, {"bounced", "550 5.1.1 no such user", "mailgun", "2026-12-03T06:00:00.000Z"}));
    auto found = store.suppressions({bob, alice});
    REQUIRE(found);
    REQUIRE(found.value().size() == 2);
    CHECK_FALSE(found.value()[0].has_value());
    REQUIRE(found.value()[1].has_value());
    CHECK(found.value()[1]->type == "bounced");
    CHECK(found.value()[1]->reason == "550 5.1.1 no such user");
    CHECK(found.value()[1]->provider == "mailgun");
    CHECK(found.value()[1]->since == "2026-12-03T06:00:00.000Z");
    CHECK(store.suppressions({}).value().empty());
    CHECK(store.unsuppress(alice).value());
    CHECK_FALSE(store.unsuppress(alice).value());
    CHECK_FALSE(store.suppressions({alice}).value()[0].has_value());
  }
  SECTION("messages: per client, the first outcome under an id, its events in order, the newest 50") {
    CHECK(store.messages("alice", "m-1", false).value().empty());
    store.record_message("alice", "m-1", R"({"status":"sent"})");
    store.record_message("alice", "m-1", R"({"status":"failed"})");  // a reused id does not replace it
    store.record_message("bob", "m-1", R"({"client":"bob"})");        // another client's id of the same name
    store.record_message_event("alice", "nobody", R"({"type":"delivered"})");
    for (int i = 0; i < 60; ++i) store.record_message_event("alice", "m-1", "{\"n\":" + std::to_string(i) + "}");
    store.record_message_event("bob", "m-1", R"({"type":"bounced"})");
    auto found = store.messages("alice", "m-1", false);
    REQUIRE(found);
    REQUIRE(found.value().size() == 1);
    CHECK(found.value()[0].outcome == R"({"status":"sent"})");
    REQUIRE(found.value()[0].events.size() == kMaxMessageEvents);
    CHECK(found.value()[0].events.front() == "{\"n\":10}");
    CHECK(found.value()[0].events.back() == "{\"n\":59}");
    auto bobs = store.messages("bob", "m-1", false);
    REQUIRE(bobs.value().size() == 1);
    CHECK(bobs.value()[0].outcome == R"({"client":"bob"})");
    CHECK(bobs.value()[0].events == std::vector<std::string>{R"({"type":"bounced"})"});
    CHECK(store.messages("carol", "m-1", false).value().empty());
    CHECK(store.messages("alice", "nobody", false).value().empty());
    CHECK(store.messages("bo", "m-1", false).value().empty());  // a name that is a prefix of another's
    // Every client's (admin), and the one kept without a client (no tokens file).
    CHECK(store.messages("carol", "m-1", true).value().size() == 2);
    CHECK(store.messages("carol", "m-", true).value().empty());
    store.record_message("", "m-2", R"({"client":null})");
    store.record_message_event("", "m-2", R"({"type":"delivered"})");
    REQUIRE(store.messages("", "m-2", false).value().size() == 1);
    CHECK(store.messages("", "m-2", false).value()[0].events.size() == 1);
  }
  SECTION("event ids: first seen once, forgotten on request") {
    CHECK(store.claim_event("sendgrid-evt-1", milliseconds(60000)).value());
    CHECK_FALSE(store.claim_event("sendgrid-evt-1", milliseconds(60000)).value());
    CHECK(store.claim_event("sendgrid-evt-2", milliseconds(60000)).value());
    store.forget_event("sendgrid-evt-1");
    CHECK(store.claim_event("sendgrid-evt-1", milliseconds(60000)).value());
  }
}

}  // namespace

TEST_CASE("GCRA: the arithmetic, on a clock of our own", "[state_store][rate]") {
  RateLimit two_per_second{2, milliseconds(1000)};  // 500 ms apart, burst 2
  CHECK(two_per_second.emission() == std::chrono::microseconds(500000));
  CHECK(two_per_second.tolerance() == std::chrono::microseconds(500000));
  std::int64_t tat = 0;
  CHECK(gcra_take(tat, 1'000'000, two_per_second).allowed);
  CHECK(gcra_take(tat, 1'000'000, two_per_second).allowed);
  RateVerdict third = gcra_take(tat, 1'000'000, two_per_second);
  CHECK_FALSE(third.allowed);
  CHECK(third.retry_after == milliseconds(500));
  CHECK(gcra_take(tat, 1'500'000, two_per_second).allowed);  // one more after one emission
  CHECK_FALSE(gcra_take(tat, 1'500'000, two_per_second).allowed);
  // 300 per minute: 5 a second, 200 ms apart, a burst of 5.
  RateLimit per_minute{300, std::chrono::minutes(1)};
  CHECK(per_minute.emission() == std::chrono::microseconds(200000));
  CHECK(per_minute.tolerance() == std::chrono::microseconds(800000));
  // Below one a second: a burst of 1.
  RateLimit slow{30, std::chrono::minutes(1)};
  CHECK(slow.tolerance() == std::chrono::microseconds(0));
}

TEST_CASE("state store contract: memory", "[state_store]") {
  fakes::FakeClock clock;
  MemoryStateStore store(clock);
  check_contract(store);
  CHECK(store.counters().up);
  CHECK(store.describe() == "memory");
}

TEST_CASE("memory store: event ids expire after their window", "[state_store]") {
  fakes::FakeClock clock;
  MemoryStateStore store(clock);
  REQUIRE(store.claim_event("e", std::chrono::hours(24)).value());
  clock.advance(std::chrono::hours(23));
  CHECK_FALSE(store.claim_event("e", std::chrono::hours(24)).value());
  clock.advance(std::chrono::hours(2));
  CHECK(store.claim_event("e", std::chrono::hours(24)).value());
}

TEST_CASE("memory store: messages expire after their TTL, the oldest go beyond the bound", "[state_store]") {
  fakes::FakeClock clock;
  MemoryStateStore store(clock, std::chrono::seconds(60));
  auto kept = [&](const std::string& id) { return store.messages("c", id, false).value().size() == 1; };
  store.record_message("c", "a", "{}");
  clock.advance(std::chrono::seconds(59));
  CHECK(kept("a"));
  clock.advance(std::chrono::seconds(2));
  CHECK_FALSE(kept("a"));
  store.record_message_event("c", "a", "{}");  // nothing to join to
  for (std::size_t i = 0; i <= MemoryStateStore::kMaxMessages; ++i) store.record_message("c", "m" + std::to_string(i), "{}");
  CHECK_FALSE(kept("m0"));
  CHECK(kept("m1"));
  CHECK(kept("m" + std::to_string(MemoryStateStore::kMaxMessages)));
}

TEST_CASE("state store contract: Redis", "[state_store][redis]") {
  fakes::RedisServer server;
  auto store = redis_store(server);
  check_contract(*store);
  CHECK(store->counters().up);
  CHECK(store->counters().errors == 0);
  // Nothing in clear: the idempotency keys are hashed, answers keep no address.
  const std::string keys = server.cli({"KEYS", "test:idem:*"});
  CHECK(keys.find("k1") == std::string::npos);
  CHECK(keys.find("k2") == std::string::npos);
  // Suppressions are kept under the hash, the address nowhere; event ids expire in Redis.
  REQUIRE(store->suppress(suppression_hash("k", "carol@example.org"), {"complained", "", "sendgrid", "t"}));
  const std::string supp = server.cli({"KEYS", "test:supp:*"});
  CHECK(supp.find(suppression_hash("k", "carol@example.org")) != std::string::npos);
  CHECK(server.cli({"GET", "test:supp:" + suppression_hash("k", "carol@example.org")}).find("carol") == std::string::npos);
  REQUIRE(store->claim_event("evt", milliseconds(60000)).value());
  CHECK(std::stoll(server.cli({"PTTL", "test:event:evt"})) > 50000);
  // A message and its events expire with the message TTL (7 days by default).
  store->record_message("billing", "ttl-1", "{}");
  store->record_message_event("billing", "ttl-1", "{}");
  REQUIRE(store->messages("billing", "ttl-1", false).value().size() == 1);
  for (const char* key : {"test:msg/billing/ttl-1", "test:msg/billing/ttl-1:events", "test:msg-clients/ttl-1"}) {
    const long long ttl = std::stoll(server.cli({"PTTL", key}));
    CHECK(ttl > 6LL * 24 * 3600 * 1000);
    CHECK(ttl <= 7LL * 24 * 3600 * 1000);
  }
  // A record kept before per-client ids ("msg:<id>", the outcome naming its client) is still read,
  // with the events whose stamp names no client, until its TTL.
  server.cli({"SET", "test:msg:old-1", R"({"client":"billing"})", "PX", "60000"});
  store->record_message_event("", "old-1", R"({"type":"bounced"})");
  auto old = store->messages("billing", "old-1", false);
  REQUIRE(old.value().size() == 1);
  CHECK(old.value()[0].outcome == R"({"client":"billing"})");
  CHECK(old.value()[0].events.size() == 1);
}

TEST_CASE("Redis: two instances share keys, overrides and buckets", "[state_store][redis]") {
  fakes::RedisServer server;
  auto a = redis_store(server);
  auto b = redis_store(server);
  REQUIRE(a->begin_idempotent("billing", "order-4711", "d", milliseconds(60000)).value().verdict == Verdict::kProceed);
  CHECK(b->begin_idempotent("billing", "order-4711", "d", milliseconds(60000)).value().verdict == Verdict::kInFlight);
  a->complete_idempotent("billing", "order-4711", "d", 200, nlohmann::ordered_json{{"provider", "sendgrid"}}, "req-a");
  auto replay = b->begin_idempotent("billing", "order-4711", "d", milliseconds(60000));
  CHECK(replay.value().verdict == Verdict::kReplay);
  CHECK(replay.value().answer.request_id == "req-a");
  REQUIRE(a->set_provider("sendgrid", {false, "ops", "incident", "t"}));
  CHECK_FALSE(b->overrides().value().enabled("sendgrid"));
  RateLimit one{1, milliseconds(1000)};
  CHECK(a->take("billing", one).value().allowed);
  CHECK_FALSE(b->take("billing", one).value().allowed);  // one bucket for the fleet
  // Another prefix is another fleet.
  auto other = redis_store(server, "other:");
  CHECK(other->begin_idempotent("billing", "order-4711", "d", milliseconds(60000)).value().verdict == Verdict::kProceed);
  CHECK(other->overrides().value().enabled("sendgrid"));
}

TEST_CASE("Redis: the claim of a holder that vanished expires, its answer is kept", "[state_store][redis]") {
  fakes::RedisServer server;
  auto store = redis_store(server);
  REQUIRE(store->begin_idempotent("", "k", "d", milliseconds(100)).value().verdict == Verdict::kProceed);
  CHECK(server.cli({"PTTL", "test:idem:" + sha256_hex(std::string("\nk"))}) != "-2");
  Verdict later = Verdict::kInFlight;
  for (int i = 0; i < 100 && later == Verdict::kInFlight; ++i) {  // at most 5 s
    std::this_thread::sleep_for(milliseconds(50));
    later = store->begin_idempotent("", "k", "d", milliseconds(100)).value().verdict;
  }
  CHECK(later == Verdict::kProceed);
  store->complete_idempotent("", "k", "d", 200, nlohmann::ordered_json::object(), "r");
  const long long ttl = std::stoll(server.cli({"PTTL", "test:idem:" + sha256_hex(std::string("\nk"))}));
  CHECK(ttl > 23LL * 3600 * 1000);  // 24 hours for an answer
}

TEST_CASE("Redis down: every operation fails fast and says so, back by itself when Redis is", "[state_store][redis]") {
  fakes::RedisServer server;
  auto store = redis_store(server);
  REQUIRE(store->overrides());
  server.kill();
  const auto begun = std::chrono::steady_clock::now();
  CHECK_FALSE(store->begin_idempotent("c", "k", "d", milliseconds(1000)));
  CHECK_FALSE(store->take("c", RateLimit{1, milliseconds(1000)}));
  CHECK_FALSE(store->overrides());
  CHECK_FALSE(store->set_order({"mailgun"}));
  // Refused connections: nowhere near a second for four operations (the timeout is 200 ms).
  CHECK(std::chrono::steady_clock::now() - begun < std::chrono::seconds(2));
  CHECK_FALSE(store->counters().up);
  CHECK(store->counters().errors >= 1);
  CHECK(store->begin_idempotent("c", "k", "d", milliseconds(1000)).error().code == "state_store_unavailable");
  server.restart();
  bool back = false;
  for (int i = 0; i < 100 && !back; ++i) {  // at most 5 s; the store retries after 250 ms
    std::this_thread::sleep_for(milliseconds(50));
    back = static_cast<bool>(store->overrides());
  }
  CHECK(back);
  CHECK(store->counters().up);
  CHECK(store->begin_idempotent("c", "k", "d", milliseconds(1000)).value().verdict == Verdict::kProceed);
  CHECK(store->take("c", RateLimit{1, milliseconds(1000)}).value().allowed);  // the script is loaded again
}

TEST_CASE("Redis: a store that stops answering costs the timeout, not a hang", "[state_store][redis]") {
  fakes::RedisServer server;
  auto store = redis_store(server);
  REQUIRE(store->overrides());
  // SIGSTOP: connections stay open, nothing answers (a hung or partitioned server).
  REQUIRE(::kill(server.pid(), SIGSTOP) == 0);
  const auto begun = std::chrono::steady_clock::now();
  auto read = store->overrides();
  const auto took = std::chrono::steady_clock::now() - begun;
  CHECK_FALSE(read);
  CHECK(took >= milliseconds(150));      // it waited for its timeout (200 ms) ...
  CHECK(took < std::chrono::seconds(3));  // ... and no longer
  server.kill();
}

TEST_CASE("Redis: the password is sent, and a wrong one is an outage, not a crash", "[state_store][redis]") {
  fakes::RedisServer server({"--requirepass", "fake-redis-password-0123"});
  auto right = redis_store(server, "test:", "fake-redis-password-0123");
  CHECK(right->overrides());
  auto wrong = redis_store(server, "test:", "not-the-password");
  auto refused = wrong->overrides();
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message.find("AUTH") != std::string::npos);
  CHECK(refused.error().message.find("not-the-password") == std::string::npos);
}

TEST_CASE("Redis: audit lines go to a capped stream, a stream that fails drops and counts", "[state_store][redis]") {
  fakes::RedisServer server;
  {
    auto store = redis_store(server, "test:", "", 1000);
    for (int i = 0; i < 50; ++i) store->stream("{\"event\":\"request\",\"n\":" + std::to_string(i) + "}");
  }  // the destructor sends what is queued
  CHECK(server.cli({"XLEN", "test:audit"}) == "50");
  CHECK(server.cli({"XREVRANGE", "test:audit", "+", "-", "COUNT", "1"}).find("\"n\":49") != std::string::npos);
  auto store = redis_store(server, "test:", "", 1000);
  server.kill();
  for (int i = 0; i < 10; ++i) store->stream("{\"event\":\"request\"}");
  std::uint64_t dropped = 0;
  for (int i = 0; i < 100 && dropped < 10; ++i) {  // at most 5 s
    std::this_thread::sleep_for(milliseconds(50));
    dropped = store->counters().stream_dropped;
  }
  CHECK(dropped == 10);
}

TEST_CASE("state store URLs", "[state_store][config]") {
  auto tcp = parse_redis_url("redis://ops@10.0.0.5:6380/2");
  REQUIRE(tcp);
  CHECK(tcp.value().host == "10.0.0.5");
  CHECK(tcp.value().port == 6380);
  CHECK(tcp.value().user == "ops");
  CHECK(tcp.value().db == 2);
  CHECK(parse_redis_url("redis://[::1]:6379").value().host == "::1");
  CHECK(parse_redis_url("redis://localhost").value().port == 6379);
  CHECK(parse_redis_url("unix:///run/redis/redis.sock").value().socket == "/run/redis/redis.sock");
  CHECK_FALSE(parse_redis_url("redis://ops:secret@host:6379"));  // no passwords in URLs
  CHECK_FALSE(parse_redis_url("redis://host:99999"));
  CHECK_FALSE(parse_redis_url("redis://host/x"));
  CHECK_FALSE(parse_redis_url("unix://relative.sock"));
  CHECK_FALSE(parse_redis_url("memcached://host"));
}

TEST_CASE("Redis over a unix socket, and a database number", "[state_store][redis]") {
  fakes::TempDir dir;
  const std::string socket = dir.file("redis.sock");
  fakes::RedisServer server({"--unixsocket", socket, "--unixsocketperm", "700"});
  auto log = quiet();
  auto store = std::move(RedisStateStore::open({"unix://" + socket, "", "test:", milliseconds(200), 0}, *log).value());
  CHECK(store->describe() == "unix://" + socket);
  REQUIRE(store->set_order({"mailgun"}));
  CHECK(server.cli({"GET", "test:order"}) == "[\"mailgun\"]");
  auto db3 = std::move(RedisStateStore::open({server.url() + "/3", "", "test:", milliseconds(200), 0}, *log).value());
  REQUIRE(db3->set_order({"sendgrid"}));
  CHECK(server.cli({"-n", "3", "GET", "test:order"}) == "[\"sendgrid\"]");
  CHECK(server.cli({"GET", "test:order"}) == "[\"mailgun\"]");  // database 0 untouched
}
