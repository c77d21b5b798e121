// StateStore: what the instances of a fleet share (SPEC section 9): idempotency keys, provider
// overrides, rate-limit buckets. Two implementations: MemoryStateStore (this process only, the
// default) and RedisStateStore (redis_state_store.h). Every call that can fail says so with an
// Error (code "state_store_unavailable"); none blocks longer than the store's timeout. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "clock.h"
#include "idempotency_cache.h"
#include "result.h"

namespace mailrelay {

// One provider switched by an operator (PATCH /v1/providers/{name}).
struct ProviderSwitch {
  bool enabled = true;
  std::string disabled_by;  // the client that made the change ("" for a loopback caller)
  std::string reason;
  std::string since;        // UTC timestamp of the change
};

// The operators' changes, applied over the configured providers by every instance.
struct ProviderOverrides {
  std::map<std::string, ProviderSwitch> providers;  // only providers ever switched
  std::vector<std::string> order;                   // empty: the configured order
  bool enabled(const std::string& name) const {
    auto it = providers.find(name);
    return it == providers.end() || it->second.enabled;
  }
};

// A client's rate: `count` requests per `period`; bursts of one second's worth (at least 1).
struct RateLimit {
  double count = 0;
  std::chrono::milliseconds period{1000};
  // Generic cell rate algorithm: the gap between two requests, and how far ahead of it one may be.
  std::chrono::microseconds emission() const;
  std::chrono::microseconds tolerance() const;
};

struct RateVerdict {
  bool allowed = true;
  std::chrono::milliseconds retry_after{0};  // when refused: the wait until one more is allowed
};

// The store's counters, for /metrics.
struct StateStoreCounters {
  bool up = true;
  std::uint64_t errors = 0;          // operations that failed (store unreachable, timeout, bad reply)
  std::uint64_t stream_dropped = 0;  // audit lines not appended to the stream
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  // Idempotency keys with IdempotencyCache's semantics, scoped by client. `in_flight_ttl` bounds
  // how long a claim whose holder vanished (a crash) blocks the key.
  virtual Result<IdempotencyCache::Lookup> begin_idempotent(const std::string& client, const std::string& key,
                                                            const std::string& digest,
                                                            std::chrono::milliseconds in_flight_ttl) = 0;
  virtual void complete_idempotent(const std::string& client, const std::string& key, const std::string& digest,
                                   int status, const nlohmann::ordered_json& body, const std::string& request_id) = 0;
  virtual void release_idempotent(const std::string& client, const std::string& key, const std::string& digest) = 0;

  virtual Result<ProviderOverrides> overrides() = 0;
  virtual Result<bool> set_provider(const std::string& name, const ProviderSwitch& value) = 0;
  // An empty order returns to the configured one.
  virtual Result<bool> set_order(const std::vector<std::string>& order) = 0;

  // Takes one request from the bucket `bucket` limited to `limit`.
  virtual Result<RateVerdict> take(const std::string& bucket, const RateLimit& limit) = 0;

  // Appends an audit line to the stream, when there is one (--audit-stream redis). Never blocks.
  virtual void stream(std::string_view /*audit_line*/) {}

  virtual StateStoreCounters counters() const = 0;
  // "memory", or the Redis address without credentials.
  virtual std::string describe() const = 0;
};

// The answer to `take` for one GCRA bucket whose theoretical arrival time is `tat` (updated when
// allowed). Times in microseconds on any monotonic scale. Shared by both stores (Redis runs the
// same steps in Lua).
RateVerdict gcra_take(std::int64_t& tat, std::int64_t now, const RateLimit& limit);

class MemoryStateStore final : public StateStore {
 public:
  explicit MemoryStateStore(Clock& clock);

  Result<IdempotencyCache::Lookup> begin_idempotent(const std::string& client, const std::string& key,
                                                    const std::string& digest, std::chrono::milliseconds) override;
  void complete_idempotent(const std::string& client, const std::string& key, const std::string& digest,
                           int status, const nlohmann::ordered_json& body, const std::string& request_id) override;
  void release_idempotent(const std::string& client, const std::string& key, const std::string& digest) override;
  Result<ProviderOverrides> overrides() override;
  Result<bool> set_provider(const std::string& name, const ProviderSwitch& value) override;
  Result<bool> set_order(const std::vector<std::string>& order) override;
  Result<RateVerdict> take(const std::string& bucket, const RateLimit& limit) override;
  StateStoreCounters counters() const override { return {}; }
  std::string describe() const override { return "memory"; }

 private:
  Clock& clock_;
  // 24 hours of keys, as Stripe and the IETF draft suggest; 100k entries of a few hundred bytes.
  IdempotencyCache idempotency_;
  std::mutex mutex_;
  ProviderOverrides overrides_;                  // guarded by mutex_
  std::map<std::string, std::int64_t> buckets_;  // guarded by mutex_: bucket -> TAT (µs)
};

}  // namespace mailrelay
