// ProviderControl: the operators' provider overrides (README "Other endpoints") as this instance applies
// them. Changes go to the state store first; every instance reads the store back every 250 ms
// (when the store is shared), so a change made on one reaches all within a second. The last copy
// read is kept while the store is unreachable. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "state_store.h"

namespace mailrelay {

class ProviderControl {
 public:
  // `poll` 0: the store is this process's own; nothing to read back.
  ProviderControl(StateStore& store, std::chrono::milliseconds poll);
  ~ProviderControl();

  // The overrides in force (never null).
  std::shared_ptr<const ProviderOverrides> current() const { return std::atomic_load(&current_); }

  Result<bool> switch_provider(const std::string& name, const ProviderSwitch& value);
  Result<bool> set_order(const std::vector<std::string>& order);
  // Reads the store now; false (keeping the last copy) when it is unreachable.
  bool refresh();

 private:
  StateStore& store_;
  std::shared_ptr<const ProviderOverrides> current_;  // std::atomic_load/atomic_store only
  std::mutex mutex_;  // guards stopping_ (and wake_'s waits)
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  std::thread poller_;
};

// The order of one request over `configured` (provider names): the override order's providers
// first, as listed, then the others as configured.
std::vector<std::string> effective_order(const std::vector<std::string>& configured, const ProviderOverrides& overrides);

}  // namespace mailrelay
