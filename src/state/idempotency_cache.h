// IdempotencyCache: remembers answers by (client, Idempotency-Key) for README "POST /v1/send": a repeat
// with the same body gets the first answer back, a different body is a conflict, a twin still
// in flight is refused. In memory, bounded (oldest entries evicted first), entries expire after
// the TTL. Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <map>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "clock.h"

namespace mailrelay {

class IdempotencyCache {
 public:
  struct Answer {
    int status = 0;
    nlohmann::ordered_json body;  // kept as JSON: a replay is answered without parsing it again
    std::string request_id;
  };
  enum class Verdict {
    kProceed,   // first time: handle it, then complete() or release()
    kReplay,    // answered before with the same body: `answer` holds it
    kInFlight,  // the first request with this key is still being handled
    kMismatch,  // the key was used with a different body
  };
  struct Lookup {
    Verdict verdict = Verdict::kProceed;
    Answer answer;
  };

  IdempotencyCache(std::size_t capacity, std::chrono::seconds ttl, Clock& clock);

  // `body_digest` identifies the request body (SHA-256 of it).
  Lookup begin(const std::string& client, const std::string& key, const std::string& body_digest);
  // Stores the answer for replays.
  void complete(const std::string& client, const std::string& key, Answer answer);
  // Forgets the key: nothing can have been sent, so a retry with it may send.
  void release(const std::string& client, const std::string& key);

  std::size_t size() const;

 private:
  struct Entry {
    std::string digest;
    bool done = false;
    Answer answer;
    Clock::TimePoint created;
    std::list<std::pair<std::string, std::string>>::iterator age;  // position in oldest_
  };
  using Id = std::pair<std::string, std::string>;  // client, key

  void erase(std::map<Id, Entry>::iterator it);

  std::size_t capacity_;
  std::chrono::seconds ttl_;
  Clock& clock_;
  mutable std::mutex mutex_;  // guards entries_ and oldest_ (capacity_, ttl_ are constant)
  std::map<Id, Entry> entries_;  // guarded by mutex_
  std::list<Id> oldest_;         // guarded by mutex_; front = oldest
};

}  // namespace mailrelay
