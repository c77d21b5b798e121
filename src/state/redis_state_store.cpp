#include "redis_state_store.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "event_loop.h"
#include "hash.h"  // sha256_hex

namespace mailrelay {
namespace {

using json = nlohmann::ordered_json;

constexpr const char* kUnavailable = "state_store_unavailable";

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Connections are non-blocking: every wait is wait_fd's, so on an event loop's fiber a round trip
// suspends the fiber and never blocks the loop; on any other thread it polls.
bool fail(redisContext* c, const char* why) {
  c->err = REDIS_ERR_IO;
  std::snprintf(c->errstr, sizeof(c->errstr), "%s", why);
  return false;
}

std::chrono::milliseconds left(std::chrono::steady_clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
}

// Sends everything the context has buffered.
bool flush(redisContext* c, std::chrono::steady_clock::time_point deadline) {
  for (int done = 0; !done;) {
    if (redisBufferWrite(c, &done) != REDIS_OK) return false;
    if (!done && !wait_fd(c->fd, EPOLLOUT, left(deadline))) return fail(c, "timed out writing");
  }
  return true;
}

// Sends what is buffered and reads one reply (what redisGetReply does on a blocking context).
bool get_reply(redisContext* c, void** reply, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  *reply = nullptr;
  if (redisGetReplyFromReader(c, reply) != REDIS_OK) return false;
  if (*reply) return true;
  if (!flush(c, deadline)) return false;
  for (;;) {
    if (!wait_fd(c->fd, EPOLLIN, left(deadline))) return fail(c, "timed out reading");
    if (redisBufferRead(c) != REDIS_OK) return false;
    if (redisGetReplyFromReader(c, reply) != REDIS_OK) return false;
    if (*reply) return true;
  }
}

// GCRA (the steps of gcra_take in state_store.cpp) as one atomic script, on the server's clock so
// that every instance measures time alike. Times in microseconds. KEYS[1] the bucket;
// ARGV emission, tolerance. Returns {1, 0} or {0, wait in ms}.
// Redis scripts run atomically and may call TIME before writing (effects replication, the
// default since Redis 5: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).
constexpr const char* kRateScript = R"(local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
if tat - now > tolerance then return {0, math.ceil((tat - now - tolerance) / 1000)} end
tat = tat + emission
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {1, 0})";

// Deletes an idempotency claim only while it is still the claim this request made.
constexpr const char* kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

std::string sha1_hex(const std::string& text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return hex_lower(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

// What a key holds while its first request is in flight. Built the same way every time: the
// release script compares it byte for byte.
std::string in_flight_value(const std::string& digest) { return json{{"s", "flight"}, {"d", digest}}.dump(); }

std::string reply_text(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

void append(redisContext* c, const std::vector<std::string>& command) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const auto& part : command) {
    argv.push_back(part.data());
    lengths.push_back(part.size());
  }
  redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data());
}

}  // namespace

void RedisStateStore::Free::operator()(redisContext* c) const { redisFree(c); }
void RedisStateStore::Free::operator()(redisReply* r) const { freeReplyObject(r); }

Result<RedisAddress> parse_redis_url(const std::string& url) {
  RedisAddress a;
  auto bad = [&](const std::string& why) {
    return Error{"config", "--state-store: " + why + " (memory, redis://[user@]host:port[/db] or unix:///path)", ""};
  };
  if (url.rfind("unix://", 0) == 0) {
    a.socket = url.substr(7);
    if (a.socket.empty() || a.socket.front() != '/') return bad("a unix socket needs an absolute path");
    return a;
  }
  if (url.rfind("redis://", 0) != 0) return bad("unknown store '" + url + "'");
  std::string rest = url.substr(8);
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    a.user = rest.substr(0, at);
    if (a.user.find(':') != std::string::npos) {
      return bad("no password in the URL; use --state-store-password-file or MAILRELAY_STATE_STORE_PASSWORD");
    }
    rest = rest.substr(at + 1);
  }
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    const std::string db = rest.substr(slash + 1);
    if (db.empty() || db.size() > 2 || db.find_first_not_of("0123456789") != std::string::npos) {
      return bad("the database must be a number");
    }
    a.db = std::stoi(db);
    rest = rest.substr(0, slash);
  }
  std::string port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos) return bad("unbalanced brackets");
    a.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    a.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    a.host = rest;
  }
  if (a.host.empty()) return bad("no host");
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535 ||
        std::stoi(port) == 0) {
      return bad("invalid port '" + port + "'");
    }
    a.port = std::stoi(port);
  }
  return a;
}

Result<std::unique_ptr<RedisStateStore>> RedisStateStore::open(RedisSettings settings, spdlog::logger& log) {
  auto address = parse_redis_url(settings.url);
  if (!address) return address.error();
  return std::make_unique<RedisStateStore>(std::move(settings), std::move(address).value(), log);
}

RedisStateStore::RedisStateStore(RedisSettings settings, RedisAddress address, spdlog::logger& log)
    : settings_(std::move(settings)), address_(std::move(address)), log_(log), rate_script_sha_(sha1_hex(kRateScript)) {
  if (settings_.stream_max_len > 0) stream_thread_ = std::thread([this] { stream_loop(); });
}

RedisStateStore::~RedisStateStore() {
  {
    std::lock_guard<std::mutex> lock(stream_mutex_);
    stopping_ = true;
  }
  stream_cv_.notify_all();
  if (stream_thread_.joinable()) stream_thread_.join();
}

std::string RedisStateStore::describe() const {
  if (!address_.socket.empty()) return "unix://" + address_.socket;
  std::string host = address_.host.find(':') != std::string::npos ? "[" + address_.host + "]" : address_.host;
  return "redis://" + host + ":" + std::to_string(address_.port) + "/" + std::to_string(address_.db);
}

StateStoreCounters RedisStateStore::counters() const { return {up_, errors_, dropped_}; }

void RedisStateStore::failed(const std::string& why) {
  ++errors_;
  // After a failure, no new connection is tried for 250 ms: calls meanwhile fail at once
  // instead of each waiting for the timeout.
  retry_at_ = steady_ns() + 250'000'000;
  if (up_.exchange(false)) log_.error("state store {}: unavailable: {}", describe(), why);
}

Result<RedisStateStore::Connection> RedisStateStore::connect() {
  // Non-blocking connect: wait until the socket is writable, then ask it how the connect went.
  Connection c(address_.socket.empty() ? redisConnectNonBlock(address_.host.c_str(), address_.port)
                                       : redisConnectUnixNonBlock(address_.socket.c_str()));
  if (!c) return Error{kUnavailable, "out of memory", ""};
  if (c->err) return Error{kUnavailable, std::string("cannot connect: ") + c->errstr, ""};
  if (!wait_fd(c->fd, EPOLLOUT, settings_.timeout)) return Error{kUnavailable, "cannot connect: timed out", ""};
  int so_error = 0;
  socklen_t so_len = sizeof(so_error);
  ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len);
  if (so_error != 0) return Error{kUnavailable, std::string("cannot connect: ") + std::strerror(so_error), ""};
  std::vector<Command> setup;
  if (!settings_.password.empty()) {
    setup.push_back(address_.user.empty() ? Command{"AUTH", settings_.password}
                                          : Command{"AUTH", address_.user, settings_.password});
  }
  if (address_.db != 0) setup.push_back({"SELECT", std::to_string(address_.db)});
  for (const auto& command : setup) {
    append(c.get(), command);
    void* raw = nullptr;
    if (!get_reply(c.get(), &raw, settings_.timeout)) {
      return Error{kUnavailable, std::string("no answer to ") + command[0] + ": " + c->errstr, ""};
    }
    Reply reply(static_cast<redisReply*>(raw));
    // The AUTH error names no secret; it is the operator's to see.
    if (reply->type == REDIS_REPLY_ERROR) return Error{kUnavailable, command[0] + " refused: " + reply_text(reply.get()), ""};
  }
  return c;
}

Result<RedisStateStore::Pooled> RedisStateStore::acquire() {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!idle_.empty()) {
      Pooled pooled = std::move(idle_.back());
      idle_.pop_back();
      return pooled;
    }
  }
  if (steady_ns() < retry_at_) return Error{kUnavailable, "the state store is unavailable", ""};
  auto fresh = connect();
  if (!fresh) {
    failed(fresh.error().message);
    return fresh.error();
  }
  return Pooled{std::move(fresh).value(), 0};
}

void RedisStateStore::release(Pooled pooled) {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  if (idle_.size() < 32) idle_.push_back(std::move(pooled));  // else closed: Redis still runs what it was sent
}

bool RedisStateStore::drain(Pooled& pooled) {
  for (; pooled.unread > 0; --pooled.unread) {
    void* raw = nullptr;
    if (!get_reply(pooled.connection.get(), &raw, settings_.timeout)) {
      failed(std::string("reading earlier replies: ") + pooled.connection->errstr);
      return false;
    }
    Reply reply(static_cast<redisReply*>(raw));
    if (reply->type == REDIS_REPLY_ERROR) {
      ++errors_;
      log_.error("state store {}: a write failed: {}", describe(), reply_text(reply.get()));
    }
  }
  return true;
}

bool RedisStateStore::send_only(const std::vector<Command>& commands) {
  auto pooled = acquire();
  if (!pooled) return false;
  Pooled& p = pooled.value();
  for (const auto& command : commands) append(p.connection.get(), command);
  if (!flush(p.connection.get(), std::chrono::steady_clock::now() + settings_.timeout)) {
    failed(std::string("write: ") + p.connection->errstr);
    return false;
  }
  p.unread += commands.size();
  release(std::move(p));
  return true;
}

Result<std::vector<RedisStateStore::Reply>> RedisStateStore::run(const std::vector<Command>& commands) {
  auto pooled = acquire();
  if (!pooled) return pooled.error();
  Pooled& p = pooled.value();
  for (const auto& command : commands) append(p.connection.get(), command);
  if (!drain(p)) return Error{kUnavailable, "the state store did not answer in time", ""};  // the connection goes
  std::vector<Reply> replies;
  std::string problem;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (!get_reply(p.connection.get(), &raw, settings_.timeout)) {
      failed(std::string(commands[i][0]) + ": " + p.connection->errstr);
      return Error{kUnavailable, "the state store did not answer in time", ""};  // the connection goes
    }
    replies.emplace_back(static_cast<redisReply*>(raw));
    if (replies.back()->type == REDIS_REPLY_ERROR && problem.empty()) {
      problem = commands[i][0] + ": " + reply_text(replies.back().get());
    }
  }
  release(std::move(p));
  if (!problem.empty()) {
    // The server answered: reachable, but this operation failed (a full memory, a script error).
    // NOSCRIPT is expected once per server (and after its restart): the caller loads the script.
    if (problem.find("NOSCRIPT") == std::string::npos) {
      ++errors_;
      log_.error("state store {}: {}", describe(), problem);
    }
    return Error{kUnavailable, problem, ""};
  }
  if (!up_.exchange(true)) log_.info("state store {}: available again", describe());
  return replies;
}

std::string RedisStateStore::idempotency_key(const std::string& client, const std::string& key) const {
  // Hashed: the key names the client's own business object (an order number, say).
  return settings_.prefix + "idem:" + sha256_hex(client + '\n' + key);
}

Result<IdempotencyCache::Lookup> RedisStateStore::begin_idempotent(const std::string& client, const std::string& key,
                                                                   const std::string& digest,
                                                                   std::chrono::milliseconds in_flight_ttl) {
  const std::string name = idempotency_key(client, key);
  // Claim it (one round trip), else read who has it; a claim expiring between the two is claimed again.
  for (int round = 0; round < 3; ++round) {
    auto claimed = run({{"SET", name, in_flight_value(digest), "NX", "PX", std::to_string(in_flight_ttl.count())}});
    if (!claimed) return claimed.error();
    if (claimed.value()[0]->type == REDIS_REPLY_STATUS) return IdempotencyCache::Lookup{};  // claimed: proceed
    auto replies = run({{"GET", name}});
    if (!replies) return replies.error();
    const redisReply* held = replies.value()[0].get();
    if (held->type != REDIS_REPLY_STRING) continue;
    json value = json::parse(reply_text(held), nullptr, false);
    if (!value.is_object() || !value.contains("d")) return Error{kUnavailable, "unreadable idempotency record", ""};
    IdempotencyCache::Lookup lookup;
    if (value["d"] != digest) {
      lookup.verdict = IdempotencyCache::Verdict::kMismatch;
    } else if (value["s"] == "flight") {
      lookup.verdict = IdempotencyCache::Verdict::kInFlight;
    } else {
      lookup.verdict = IdempotencyCache::Verdict::kReplay;
      lookup.answer.status = value.value("status", 200);
      lookup.answer.body = std::move(value["body"]);
      lookup.answer.request_id = value.value("request_id", "");
    }
    return lookup;
  }
  return Error{kUnavailable, "idempotency key kept changing", ""};
}

void RedisStateStore::complete_idempotent(const std::string& client, const std::string& key, const std::string& digest,
                                          int status, const nlohmann::ordered_json& body, const std::string& request_id) {
  std::string value = json{{"s", "done"}, {"d", digest}, {"status", status}, {"request_id", request_id}}.dump();
  value.pop_back();  // the closing brace: the answer goes in as it is, without a copy of its tree
  value += ",\"body\":" + body.dump(-1, ' ', false, json::error_handler_t::replace) + "}";
  // 24 hours of keys, as Stripe and the IETF draft suggest. Sent without waiting: nobody waits
  // on it, and a retry racing it sees the claim (409), never a second send. A failure leaves the
  // claim, which expires after its own TTL.
  send_only({{"SET", idempotency_key(client, key), std::move(value), "PX", std::to_string(24 * 3600 * 1000)}});
}

void RedisStateStore::release_idempotent(const std::string& client, const std::string& key, const std::string& digest) {
  run({{"EVAL", kReleaseScript, "1", idempotency_key(client, key), in_flight_value(digest)}});
}

Result<ProviderOverrides> RedisStateStore::overrides() {
  auto replies = run({{"HGETALL", settings_.prefix + "providers"}, {"GET", settings_.prefix + "order"}});
  if (!replies) return replies.error();
  ProviderOverrides out;
  const redisReply* all = replies.value()[0].get();
  for (std::size_t i = 0; all->type == REDIS_REPLY_ARRAY && i + 1 < all->elements; i += 2) {
    json v = json::parse(reply_text(all->element[i + 1]), nullptr, false);
    if (!v.is_object()) continue;
    ProviderSwitch s;
    s.enabled = v.value("enabled", true);
    s.disabled_by = v.value("disabled_by", "");
    s.reason = v.value("reason", "");
    s.since = v.value("since", "");
    out.providers[reply_text(all->element[i])] = std::move(s);
  }
  json order = json::parse(reply_text(replies.value()[1].get()), nullptr, false);
  if (order.is_array()) {
    for (const auto& name : order) {
      if (name.is_string()) out.order.push_back(name.get<std::string>());
    }
  }
  return out;
}

Result<bool> RedisStateStore::set_provider(const std::string& name, const ProviderSwitch& value) {
  json v{{"enabled", value.enabled}, {"disabled_by", value.disabled_by}, {"reason", value.reason}, {"since", value.since}};
  auto replies = run({{"HSET", settings_.prefix + "providers", name, v.dump(-1, ' ', false, json::error_handler_t::replace)}});
  if (!replies) return replies.error();
  return true;
}

Result<bool> RedisStateStore::set_order(const std::vector<std::string>& order) {
  auto replies = order.empty() ? run({{"DEL", settings_.prefix + "order"}})
                               : run({{"SET", settings_.prefix + "order", json(order).dump()}});
  if (!replies) return replies.error();
  return true;
}

Result<RateVerdict> RedisStateStore::take(const std::string& bucket, const RateLimit& limit) {
  const std::string name = settings_.prefix + "rate:" + bucket;
  const std::string emission = std::to_string(limit.emission().count());
  const std::string tolerance = std::to_string(limit.tolerance().count());
  auto replies = run({{"EVALSHA", rate_script_sha_, "1", name, emission, tolerance}});
  if (!replies && replies.error().message.find("NOSCRIPT") != std::string::npos) {
    replies = run({{"EVAL", kRateScript, "1", name, emission, tolerance}});
  }
  if (!replies) return replies.error();
  const redisReply* r = replies.value()[0].get();
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return Error{kUnavailable, "unexpected rate-limit reply", ""};
  return RateVerdict{r->element[0]->integer == 1, std::chrono::milliseconds(r->element[1]->integer)};
}

Result<std::vector<std::optional<Suppression>>> RedisStateStore::suppressions(const std::vector<std::string>& hashes) {
  std::vector<std::optional<Suppression>> out(hashes.size());
  if (hashes.empty()) return out;
  Command get{"MGET"};
  for (const auto& hash : hashes) get.push_back(suppression_key(hash));
  auto replies = run({get});
  if (!replies) return replies.error();
  const redisReply* all = replies.value()[0].get();
  for (std::size_t i = 0; all->type == REDIS_REPLY_ARRAY && i < all->elements && i < out.size(); ++i) {
    json v = json::parse(reply_text(all->element[i]), nullptr, false);
    if (!v.is_object()) continue;
    out[i] = Suppression{v.value("type", ""), v.value("reason", ""), v.value("provider", ""), v.value("since", "")};
  }
  return out;
}

Result<bool> RedisStateStore::suppress(const std::string& hash, const Suppression& value) {
  json v{{"type", value.type}, {"reason", value.reason}, {"provider", value.provider}, {"since", value.since}};
  auto replies = run({{"SET", suppression_key(hash), v.dump(-1, ' ', false, json::error_handler_t::replace)}});
  if (!replies) return replies.error();
  return true;
}

Result<bool> RedisStateStore::unsuppress(const std::string& hash) {
  auto replies = run({{"DEL", suppression_key(hash)}});
  if (!replies) return replies.error();
  return replies.value()[0]->integer > 0;
}

Result<bool> RedisStateStore::claim_event(const std::string& id, std::chrono::milliseconds ttl) {
  auto replies = run({{"SET", event_key(id), "1", "NX", "PX", std::to_string(ttl.count())}});
  if (!replies) return replies.error();
  return replies.value()[0]->type == REDIS_REPLY_STATUS;  // OK: first seen; nil: seen before
}

void RedisStateStore::forget_event(const std::string& id) { run({{"DEL", event_key(id)}}); }

// Two keys per message: message_key (the outcome, set once) and message_key + ":events" (a list,
// trimmed to the newest kMaxMessageEvents), both expiring the message TTL after their last write;
// with a client, its name joins the set message_clients_key(id) (same TTL) for admin reads. Sent
// without waiting: nobody waits on them (failures are counted by the next user).
void RedisStateStore::record_message(const std::string& client, const std::string& request_id,
                                     const std::string& outcome) {
  const std::string ttl = std::to_string(settings_.message_ttl.count() * 1000);
  std::vector<Command> commands{{"SET", message_key(client, request_id), outcome, "NX", "PX", ttl}};
  if (!client.empty()) {
    commands.push_back({"SADD", message_clients_key(request_id), client});
    commands.push_back({"PEXPIRE", message_clients_key(request_id), ttl});
  }
  send_only(commands);
}

void RedisStateStore::record_message_event(const std::string& client, const std::string& request_id,
                                           const std::string& event) {
  const std::string events = message_key(client, request_id) + ":events";
  send_only({{"RPUSH", events, event},
             {"LTRIM", events, "-" + std::to_string(kMaxMessageEvents), "-1"},
             {"PEXPIRE", events, std::to_string(settings_.message_ttl.count() * 1000)}});
}

Result<std::vector<MessageRecord>> RedisStateStore::messages(const std::string& client, const std::string& request_id,
                                                             bool every) {
  // Whose records to read: the caller's; with `every`, each client's in the set. A record kept
  // before per-client ids ("msg:<id>", the key without a client) is read too, until its TTL:
  // the caller (message status) shows it only to the client its outcome names.
  std::vector<std::string> clients{client};
  if (every) {
    auto members = run({{"SMEMBERS", message_clients_key(request_id)}});
    if (!members) return members.error();
    const redisReply* set = members.value()[0].get();
    for (std::size_t i = 0; set->type == REDIS_REPLY_ARRAY && i < set->elements; ++i) {
      std::string name = reply_text(set->element[i]);
      if (name != client) clients.push_back(std::move(name));
    }
  }
  if (!client.empty()) clients.emplace_back();
  std::vector<Command> reads;
  for (const std::string& name : clients) {
    reads.push_back({"GET", message_key(name, request_id)});
    reads.push_back({"LRANGE", message_key(name, request_id) + ":events", "0", "-1"});
  }
  auto replies = run(reads);
  if (!replies) return replies.error();
  std::vector<MessageRecord> out;
  for (std::size_t i = 0; i + 1 < replies.value().size(); i += 2) {
    const redisReply* outcome = replies.value()[i].get();
    if (outcome->type != REDIS_REPLY_STRING) continue;
    MessageRecord record{reply_text(outcome), {}};
    const redisReply* events = replies.value()[i + 1].get();
    for (std::size_t j = 0; events->type == REDIS_REPLY_ARRAY && j < events->elements; ++j) {
      record.events.push_back(reply_text(events->element[j]));
    }
    out.push_back(std::move(record));
  }
  return out;
}

void RedisStateStore::stream(std::string_view audit_line) {
  if (settings_.stream_max_len == 0) return;
  {
    std::lock_guard<std::mutex> lock(stream_mutex_);
    // Bounded: a store that is down must not hold the process's memory hostage.
    if (stream_queue_.size() >= 10000) {
      ++dropped_;
      return;
    }
    stream_queue_.emplace_back(audit_line);
  }
  stream_cv_.notify_one();
}

// Appends queued lines in batches (XADD ... MAXLEN ~ N, pipelined). A batch that fails is
// dropped and counted: the file log is the record (README "Running several instances").
void RedisStateStore::stream_loop() {
  const std::string key = settings_.prefix + "audit";
  const std::string max_len = std::to_string(settings_.stream_max_len);
  for (;;) {
    std::vector<Command> batch;
    {
      std::unique_lock<std::mutex> lock(stream_mutex_);
      stream_cv_.wait(lock, [&] { return stopping_ || !stream_queue_.empty(); });
      if (stream_queue_.empty()) return;  // stopping, and everything queued was sent
      while (!stream_queue_.empty() && batch.size() < 256) {
        batch.push_back({"XADD", key, "MAXLEN", "~", max_len, "*", "line", std::move(stream_queue_.front())});
        stream_queue_.pop_front();
      }
    }
    if (!run(batch)) {
      dropped_ += batch.size();
      std::unique_lock<std::mutex> lock(stream_mutex_);
      // While the store is down, wait a little rather than spin through the queue.
      stream_cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_; });
    }
  }
}

}  // namespace mailrelay
