#include "state_store.h"

#include <algorithm>
#include <cmath>

namespace mailrelay {

using std::chrono::microseconds;

microseconds RateLimit::emission() const {
  return microseconds(static_cast<std::int64_t>(std::llround(std::chrono::duration<double, std::micro>(period).count() / count)));
}

// A burst of one second's worth, at least 1 (SPEC section 10): burst - 1 emissions ahead.
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

MemoryStateStore::MemoryStateStore(Clock& clock)
    : clock_(clock), idempotency_(100000, std::chrono::hours(24), clock) {}

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

}  // namespace mailrelay
