// StateStore: what the instances of a fleet share (README "Running several instances"): idempotency keys, provider
// overrides, rate-limit buckets, suppressions, webhook event ids. Two implementations: MemoryStateStore (this process only, the
// default) and RedisStateStore (redis_state_store.h). Every call whose answer matters says when it
// fails with an Error (code "state_store_unavailable"); the three that only clean up
// (complete_idempotent, release_idempotent, forget_event) fail silently, counted in the store's
// error counter, and their keys expire. None blocks longer than the store's timeout. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
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

// Why a recipient is not sent to (README "Delivery events and suppressions"). Kept under a keyed hash of the address, never
// the address itself.
struct Suppression {
  std::string type;      // the event that caused it (bounced, complained, unsubscribed, dropped) or "manual"
  std::string reason;    // addresses redacted
  std::string provider;  // the provider that reported it; "" for a manual one
  std::string since;     // UTC timestamp
};

// A message as GET /v1/messages/{request_id} reads it: the send's outcome and, oldest first, the
// delivery events joined to it since (README "Message status"). JSON texts holding no address.
struct MessageRecord {
  std::string outcome;
  std::vector<std::string> events;
};

// Messages are kept this long after their send by default (--message-status-ttl).
inline constexpr std::chrono::seconds kDefaultMessageTtl{7 * 24 * 3600};
// Events kept per message at most (the newest).
inline constexpr std::size_t kMaxMessageEvents = 50;

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

  // Suppressed recipients by keyed hash (suppression_hash): one answer per hash, in order.
  virtual Result<std::vector<std::optional<Suppression>>> suppressions(const std::vector<std::string>& hashes) = 0;
  virtual Result<bool> suppress(const std::string& hash, const Suppression& value) = 0;
  // True when there was one to remove.
  virtual Result<bool> unsuppress(const std::string& hash) = 0;

  // Provider event ids seen (webhook replays): true when `id` was not seen within `ttl`; it is
  // then remembered for `ttl`. `forget_event` undoes a claim whose batch was not taken.
  virtual Result<bool> claim_event(const std::string& id, std::chrono::milliseconds ttl) = 0;
  virtual void forget_event(const std::string& id) = 0;

  // Message status, kept the store's message TTL after the send, per client (README "Message
  // status"): `client` is the token's name, "" without a tokens file. The first send under a
  // request id is the one kept for that client; two clients' ids never meet. Both writes only add
  // to what a read shows: they fail silently, counted in the store's error counter. An event
  // whose stamp names no client joins the record kept without one (and, in Redis, the records a
  // version before per-client ids kept, until their TTL).
  virtual void record_message(const std::string& client, const std::string& request_id, const std::string& outcome) = 0;
  virtual void record_message_event(const std::string& client, const std::string& request_id,
                                    const std::string& event) = 0;
  // `client`'s record under `request_id` (at most one), or with `every` each client's; empty when
  // unknown or expired.
  virtual Result<std::vector<MessageRecord>> messages(const std::string& client, const std::string& request_id,
                                                      bool every) = 0;

  // Appends an audit line to the stream, when there is one (--audit-stream redis). Never blocks.
  virtual void stream(std::string_view /*audit_line*/) {}

  virtual StateStoreCounters counters() const = 0;
  // "memory", or the Redis address without credentials.
  virtual std::string describe() const = 0;
};

// The store's name for a recipient: HMAC-SHA256 of the lower-cased address under `key` (the audit
// recipient key, so that one key serves a fleet), in hex. Without a key, a fixed one: the hash then
// hides the address from a casual reader of the store, not from a dictionary.
std::string suppression_hash(std::string_view key, std::string_view address);

// The answer to `take` for one GCRA bucket whose theoretical arrival time is `tat` (updated when
// allowed). Times in microseconds on any monotonic scale. Shared by both stores (Redis runs the
// same steps in Lua).
RateVerdict gcra_take(std::int64_t& tat, std::int64_t now, const RateLimit& limit);

class MemoryStateStore final : public StateStore {
 public:
  explicit MemoryStateStore(Clock& clock, std::chrono::seconds message_ttl = kDefaultMessageTtl);

  Result<IdempotencyCache::Lookup> begin_idempotent(const std::string& client, const std::string& key,
                                                    const std::string& digest, std::chrono::milliseconds) override;
  void complete_idempotent(const std::string& client, const std::string& key, const std::string& digest,
                           int status, const nlohmann::ordered_json& body, const std::string& request_id) override;
  void release_idempotent(const std::string& client, const std::string& key, const std::string& digest) override;
  Result<ProviderOverrides> overrides() override;
  Result<bool> set_provider(const std::string& name, const ProviderSwitch& value) override;
  Result<bool> set_order(const std::vector<std::string>& order) override;
  Result<RateVerdict> take(const std::string& bucket, const RateLimit& limit) override;
  Result<std::vector<std::optional<Suppression>>> suppressions(const std::vector<std::string>& hashes) override;
  Result<bool> suppress(const std::string& hash, const Suppression& value) override;
  Result<bool> unsuppress(const std::string& hash) override;
  Result<bool> claim_event(const std::string& id, std::chrono::milliseconds ttl) override;
  void forget_event(const std::string& id) override;
  void record_message(const std::string& client, const std::string& request_id, const std::string& outcome) override;
  void record_message_event(const std::string& client, const std::string& request_id, const std::string& event) override;
  Result<std::vector<MessageRecord>> messages(const std::string& client, const std::string& request_id,
                                              bool every) override;
  StateStoreCounters counters() const override { return {}; }
  std::string describe() const override { return "memory"; }

  // Event ids remembered at most (the oldest go first beyond it).
  static constexpr std::size_t kMaxEvents = 1000000;
  // Messages kept at most (the oldest go first beyond it): about 600 bytes each without events,
  // so 6 MB. The memory store is one instance's; a week of messages belongs in Redis.
  static constexpr std::size_t kMaxMessages = 10000;

 private:
  Clock& clock_;
  // 24 hours of keys, as Stripe and the IETF draft suggest; 100k entries of a few hundred bytes.
  IdempotencyCache idempotency_;
  const std::chrono::seconds message_ttl_;
  std::mutex mutex_;  // guards the seven members below
  ProviderOverrides overrides_;                  // guarded by mutex_
  std::map<std::string, std::int64_t> buckets_;  // guarded by mutex_: bucket -> TAT (µs)
  std::unordered_map<std::string, Suppression> suppressions_;  // guarded by mutex_
  std::unordered_map<std::string, Clock::TimePoint> events_;   // guarded by mutex_: id -> forgotten at
  std::deque<std::pair<Clock::TimePoint, std::string>> event_order_;  // guarded by mutex_: oldest first
  struct StoredMessage {
    MessageRecord record;
    Clock::TimePoint expires;
  };
  // Keyed "<request id> <client>" (neither holds a space), so one id's records are neighbours.
  std::map<std::string, StoredMessage> messages_;  // guarded by mutex_
  std::deque<std::string> message_order_;          // guarded by mutex_: oldest first
};

}  // namespace mailrelay
