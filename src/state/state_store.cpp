#include "state_store.h"

#include <algorithm>
#include <cmath>

#include "ascii.h"
#include "hash.h"

namespace mailrelay {

using std::chrono::microseconds;

microseconds RateLimit::emission() const {
  return microseconds(static_cast<std::int64_t>(std::llround(std::chrono::duration<double, std::micro>(period).count() / count)));
}

// A burst of one second's worth, at least 1 (README "Other endpoints"): burst - 1 emissions ahead.
microseconds RateLimit::tolerance() const {
  const double per_second = count * 1000.0 / static_cast<double>(period.count());
  const double burst = std::max(1.0, std::floor(per_second));
  return microseconds(static_cast<std::int64_t>((burst - 1) * static_cast<double>(emission().count())));
}

RateVerdict gcra_take(std::int64_t& tat, std::int64_t now, const RateLimit& limit) {
  const std::int64_t start = std::max(tat, now);
  const std::int64_t ahead = start - now;
  const std::int64_t tolerance = limit.tolerance().count();
  if (ahead > tolerance) return {false, std::chrono::milliseconds((ahead - tolerance + 999) / 1000)};
  tat = start + limit.emission().count();
  return {true, std::chrono::milliseconds(0)};
}

MemoryStateStore::MemoryStateStore(Clock& clock, std::chrono::seconds message_ttl)
    : clock_(clock), idempotency_(100000, std::chrono::hours(24), clock), message_ttl_(message_ttl) {}

Result<IdempotencyCache::Lookup> MemoryStateStore::begin_idempotent(const std::string& client, const std::string& key,
                                                                    const std::string& digest, std::chrono::milliseconds) {
  return idempotency_.begin(client, key, digest);
}

void MemoryStateStore::complete_idempotent(const std::string& client, const std::string& key, const std::string&,
                                           int status, const nlohmann::ordered_json& body, const std::string& request_id) {
  idempotency_.complete(client, key, {status, body, request_id});
}

void MemoryStateStore::release_idempotent(const std::string& client, const std::string& key, const std::string&) {
  idempotency_.release(client, key);
}

Result<ProviderOverrides> MemoryStateStore::overrides() {
  std::lock_guard<std::mutex> lock(mutex_);
  return overrides_;
}

Result<bool> MemoryStateStore::set_provider(const std::string& name, const ProviderSwitch& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  overrides_.providers[name] = value;
  return true;
}

Result<bool> MemoryStateStore::set_order(const std::vector<std::string>& order) {
  std::lock_guard<std::mutex> lock(mutex_);
  overrides_.order = order;
  return true;
}

Result<RateVerdict> MemoryStateStore::take(const std::string& bucket, const RateLimit& limit) {
  const std::int64_t now =
      std::chrono::duration_cast<microseconds>(clock_.now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, fresh] = buckets_.emplace(bucket, now);
  return gcra_take(it->second, now, limit);
}

std::string suppression_hash(std::string_view key, std::string_view address) {
  static constexpr std::string_view kNoKey = "mailrelay suppression list";
  return hmac_sha256_hex(key.empty() ? kNoKey : key, ascii_lower(address));
}

Result<std::vector<std::optional<Suppression>>> MemoryStateStore::suppressions(const std::vector<std::string>& hashes) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::optional<Suppression>> out;
  for (const auto& hash : hashes) {
    auto it = suppressions_.find(hash);
    out.push_back(it == suppressions_.end() ? std::nullopt : std::optional<Suppression>(it->second));
  }
  return out;
}

Result<bool> MemoryStateStore::suppress(const std::string& hash, const Suppression& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  suppressions_[hash] = value;
  return true;
}

Result<bool> MemoryStateStore::unsuppress(const std::string& hash) {
  std::lock_guard<std::mutex> lock(mutex_);
  return suppressions_.erase(hash) > 0;
}

Result<bool> MemoryStateStore::claim_event(const std::string& id, std::chrono::milliseconds ttl) {
  const Clock::TimePoint now = clock_.now();
  std::lock_guard<std::mutex> lock(mutex_);
  // Expired ids go first, then the oldest beyond the bound.
  while (!event_order_.empty() && (event_order_.front().first <= now || event_order_.size() >= kMaxEvents)) {
    auto it = events_.find(event_order_.front().second);
    if (it != events_.end() && it->second == event_order_.front().first) events_.erase(it);
    event_order_.pop_front();
  }
  auto [it, fresh] = events_.emplace(id, now + ttl);
  if (!fresh && it->second > now) return false;
  it->second = now + ttl;
  event_order_.emplace_back(it->second, id);
  return true;
}

void MemoryStateStore::forget_event(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  events_.erase(id);
}

void MemoryStateStore::record_message(const std::string& client, const std::string& request_id,
                                      const std::string& outcome) {
  const Clock::TimePoint now = clock_.now();
  std::lock_guard<std::mutex> lock(mutex_);
  // Every message lives as long: the oldest expire first. Beyond the bound the oldest go too.
  while (!message_order_.empty()) {
    auto it = messages_.find(message_order_.front());
    if (it != messages_.end() && it->second.expires > now && messages_.size() < kMaxMessages) break;
    if (it != messages_.end()) messages_.erase(it);
    message_order_.pop_front();
  }
  std::string key = request_id + ' ' + client;
  if (messages_.emplace(key, StoredMessage{MessageRecord{outcome, {}}, now + message_ttl_}).second) {
    message_order_.push_back(std::move(key));
  }
}

void MemoryStateStore::record_message_event(const std::string& client, const std::string& request_id,
                                            const std::string& event) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = messages_.find(request_id + ' ' + client);
  if (it == messages_.end() || it->second.expires <= clock_.now()) return;
  std::vector<std::string>& events = it->second.record.events;
  if (events.size() >= kMaxMessageEvents) events.erase(events.begin());
  events.push_back(event);
}

Result<std::vector<MessageRecord>> MemoryStateStore::messages(const std::string& client, const std::string& request_id,
                                                              bool every) {
  const Clock::TimePoint now = clock_.now();
  std::vector<MessageRecord> out;
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string first = request_id + ' ';
  auto keep = [&](const StoredMessage& stored) {
    if (stored.expires > now) out.push_back(stored.record);
  };
  if (!every) {
    if (auto it = messages_.find(first + client); it != messages_.end()) keep(it->second);
    return out;
  }
  for (auto it = messages_.lower_bound(first); it != messages_.end() && it->first.compare(0, first.size(), first) == 0;
       ++it) {
    keep(it->second);
  }
  return out;
}

}  // namespace mailrelay
