#include <catch2/catch.hpp>

#include "fake_clock.h"
#include "idempotency_cache.h"

using namespace mailrelay;
using Verdict = IdempotencyCache::Verdict;

TEST_CASE("idempotency table: first, in flight, replay, mismatch, other client", "[idempotency]") {
  fakes::FakeClock clock;
  IdempotencyCache cache(100, std::chrono::hours(24), clock);
  CHECK(cache.begin("billing", "k1", "body-a").verdict == Verdict::kProceed);
  CHECK(cache.begin("billing", "k1", "body-a").verdict == Verdict::kInFlight);
  CHECK(cache.begin("billing", "k1", "body-b").verdict == Verdict::kMismatch);
  CHECK(cache.begin("shop", "k1", "body-a").verdict == Verdict::kProceed);  // keys are per client
  cache.complete("billing", "k1", {200, nlohmann::ordered_json{{"status", "sent"}}, "req-1"});
  auto replay = cache.begin("billing", "k1", "body-a");
  CHECK(replay.verdict == Verdict::kReplay);
  CHECK(replay.answer.status == 200);
  CHECK(replay.answer.body.dump() == "{\"status\":\"sent\"}");
  CHECK(replay.answer.request_id == "req-1");
  CHECK(cache.begin("billing", "k1", "body-b").verdict == Verdict::kMismatch);
}

TEST_CASE("idempotency: a released key can be used again", "[idempotency]") {
  fakes::FakeClock clock;
  IdempotencyCache cache(100, std::chrono::hours(24), clock);
  REQUIRE(cache.begin("", "k", "a").verdict == Verdict::kProceed);
  cache.release("", "k");
  CHECK(cache.begin("", "k", "b").verdict == Verdict::kProceed);
  cache.complete("", "k", {200, "{}", "r"});
  cache.release("", "k");  // an answered key is never released
  CHECK(cache.begin("", "k", "b").verdict == Verdict::kReplay);
}

TEST_CASE("idempotency: entries expire after 24 hours", "[idempotency]") {
  fakes::FakeClock clock;
  IdempotencyCache cache(100, std::chrono::hours(24), clock);
  cache.begin("c", "k", "a");
  cache.complete("c", "k", {200, "{}", "r"});
  clock.advance(std::chrono::hours(23));
  CHECK(cache.begin("c", "k", "a").verdict == Verdict::kReplay);
  clock.advance(std::chrono::hours(1));
  CHECK(cache.begin("c", "k", "a").verdict == Verdict::kProceed);
}

TEST_CASE("idempotency: memory is bounded, oldest answered entries go first, in-flight ones stay", "[idempotency]") {
  fakes::FakeClock clock;
  IdempotencyCache cache(3, std::chrono::hours(24), clock);
  cache.begin("c", "in-flight", "x");  // never answered
  for (const char* k : {"a", "b"}) {
    cache.begin("c", k, "x");
    cache.complete("c", k, {200, "{}", k});
  }
  REQUIRE(cache.size() == 3);
  cache.begin("c", "d", "x");  // evicts "a", the oldest answered one
  CHECK(cache.size() == 3);
  CHECK(cache.begin("c", "in-flight", "x").verdict == Verdict::kInFlight);
  CHECK(cache.begin("c", "b", "x").verdict == Verdict::kReplay);
  CHECK(cache.begin("c", "a", "x").verdict == Verdict::kProceed);  // forgotten
}
