#include "idempotency_cache.h"

namespace mailrelay {

IdempotencyCache::IdempotencyCache(std::size_t capacity, std::chrono::seconds ttl, Clock& clock)
    : capacity_(capacity), ttl_(ttl), clock_(clock) {}

void IdempotencyCache::erase(std::map<Id, Entry>::iterator it) {
  oldest_.erase(it->second.age);
  entries_.erase(it);
}

IdempotencyCache::Lookup IdempotencyCache::begin(const std::string& client, const std::string& key,
                                                 const std::string& body_digest) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = clock_.now();
  // Expired entries leave from the old end; the list is in creation order.
  while (!oldest_.empty()) {
    auto it = entries_.find(oldest_.front());
    if (now - it->second.created < ttl_) break;
    erase(it);
  }
  Id id{client, key};
  auto it = entries_.find(id);
  if (it != entries_.end()) {
    if (it->second.digest != body_digest) return {Verdict::kMismatch, {}};
    if (!it->second.done) return {Verdict::kInFlight, {}};
    return {Verdict::kReplay, it->second.answer};
  }
  // Full: the oldest finished entry makes room. Entries in flight are never evicted (their
  // number is bounded by --max-in-flight), so a twin can never slip past its first.
  if (entries_.size() >= capacity_) {
    for (auto age = oldest_.begin(); age != oldest_.end(); ++age) {
      auto victim = entries_.find(*age);
      if (victim->second.done) {
        erase(victim);
        break;
      }
    }
  }
  oldest_.push_back(id);
  Entry entry;
  entry.digest = body_digest;
  entry.created = now;
  entry.age = std::prev(oldest_.end());
  entries_.emplace(std::move(id), std::move(entry));
  return {Verdict::kProceed, {}};
}

void IdempotencyCache::complete(const std::string& client, const std::string& key, Answer answer) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find({client, key});
  if (it == entries_.end()) return;
  it->second.done = true;
  it->second.answer = std::move(answer);
}

void IdempotencyCache::release(const std::string& client, const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find({client, key});
  if (it != entries_.end() && !it->second.done) erase(it);
}

std::size_t IdempotencyCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

}  // namespace mailrelay
