// RedisStateStore: the StateStore of a fleet, on Redis 6+ (README "Running several instances") through hiredis
// non-blocking contexts whose waits are wait_fd's (on an event loop the calling fiber suspends;
// the loop never blocks). Connections are pooled (a fiber holds one for its round trip); each
// operation is one round trip (pipelined where it takes more than one command) with a short
// timeout, so an unreachable store costs a request at
// most that timeout, and after a failure calls fail at once for a moment before one tries again.
// Nothing here waits for the store to come back: the next call after it does succeeds.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "state_store.h"

struct redisContext;
struct redisReply;

namespace mailrelay {

struct RedisSettings {
  std::string url;       // redis://[user@]host:port[/db] or unix:///path/redis.sock
  std::string password;  // "" = no AUTH
  std::string prefix = "mailrelay:";
  std::chrono::milliseconds timeout{50};
  std::size_t stream_max_len = 0;  // > 0: every audit line also goes to the stream <prefix>audit
  std::chrono::seconds message_ttl = kDefaultMessageTtl;
};

// Where a state-store URL points. Fails with a message for the operator.
struct RedisAddress {
  std::string host;  // empty for a unix socket
  int port = 6379;
  std::string socket;
  std::string user;
  int db = 0;
};
Result<RedisAddress> parse_redis_url(const std::string& url);

class RedisStateStore final : public StateStore {
 public:
  // Checks the URL only: a store that is down at start-up is an outage like any other.
  static Result<std::unique_ptr<RedisStateStore>> open(RedisSettings settings, spdlog::logger& log);
  RedisStateStore(RedisSettings settings, RedisAddress address, spdlog::logger& log);
  ~RedisStateStore() override;

  Result<IdempotencyCache::Lookup> begin_idempotent(const std::string& client, const std::string& key,
                                                    const std::string& digest,
                                                    std::chrono::milliseconds in_flight_ttl) override;
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
  void stream(std::string_view audit_line) override;
  StateStoreCounters counters() const override;
  std::string describe() const override;

 private:
  struct Free {
    void operator()(redisContext* c) const;
    void operator()(redisReply* r) const;
  };
  using Connection = std::unique_ptr<redisContext, Free>;
  using Reply = std::unique_ptr<redisReply, Free>;
  using Command = std::vector<std::string>;
  // A pooled connection and the replies it still owes for commands sent without waiting.
  struct Pooled {
    Connection connection;
    std::size_t unread = 0;
  };

  // Runs the commands pipelined on one pooled connection: one reply each, or the store is
  // unavailable (unreachable, timed out, or an error reply).
  Result<std::vector<Reply>> run(const std::vector<Command>& commands);
  // Sends the commands without waiting for their replies (read, and checked, by the connection's
  // next user). For writes nobody waits on. False when they could not be sent.
  bool send_only(const std::vector<Command>& commands);
  Result<Pooled> acquire();
  void release(Pooled pooled);
  // Reads (and logs the errors of) the replies owed for earlier send_only commands.
  bool drain(Pooled& pooled);
  Result<Connection> connect();
  void failed(const std::string& why);
  std::string idempotency_key(const std::string& client, const std::string& key) const;
  std::string event_key(const std::string& id) const { return settings_.prefix + "event:" + id; }
  std::string suppression_key(const std::string& hash) const { return settings_.prefix + "supp:" + hash; }
  // "msg:<id>" without a client (and every record before per-client ids); "msg/<client>/<id>"
  // with one: neither a client name nor a request id holds a '/'.
  std::string message_key(const std::string& client, const std::string& id) const {
    return client.empty() ? settings_.prefix + "msg:" + id : settings_.prefix + "msg/" + client + "/" + id;
  }
  // The clients with a record under `id` (for admin reads).
  std::string message_clients_key(const std::string& id) const { return settings_.prefix + "msg-clients/" + id; }
  void stream_loop();

  const RedisSettings settings_;
  const RedisAddress address_;
  spdlog::logger& log_;
  std::mutex pool_mutex_;  // guards idle_
  std::vector<Pooled> idle_;  // guarded by pool_mutex_
  std::atomic<bool> up_{true};
  std::atomic<std::int64_t> retry_at_{0};  // steady-clock ns: no new connection before this
  std::atomic<std::uint64_t> errors_{0}, dropped_{0};
  std::string rate_script_sha_;

  std::mutex stream_mutex_;  // guards stream_queue_ and stopping_
  std::condition_variable stream_cv_;
  std::deque<std::string> stream_queue_;  // guarded by stream_mutex_
  bool stopping_ = false;                  // guarded by stream_mutex_
  std::thread stream_thread_;
};

}  // namespace mailrelay
