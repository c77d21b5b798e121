#include "provider_control.h"

#include <algorithm>

namespace mailrelay {

ProviderControl::ProviderControl(StateStore& store, std::chrono::milliseconds poll)
    : store_(store), current_(std::make_shared<const ProviderOverrides>()) {
  refresh();
  if (poll.count() > 0) {
    poller_ = std::thread([this, poll] {
      std::unique_lock<std::mutex> lock(mutex_);
      while (!wake_.wait_for(lock, poll, [&] { return stopping_; })) {
        lock.unlock();
        refresh();
        lock.lock();
      }
    });
  }
}

ProviderControl::~ProviderControl() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (poller_.joinable()) poller_.join();
}

bool ProviderControl::refresh() {
  auto read = store_.overrides();
  if (!read) return false;
  std::atomic_store(&current_, std::shared_ptr<const ProviderOverrides>(
                                   std::make_shared<ProviderOverrides>(std::move(read).value())));
  return true;
}

Result<bool> ProviderControl::switch_provider(const std::string& name, const ProviderSwitch& value) {
  auto done = store_.set_provider(name, value);
  if (done) refresh();
  return done;
}

Result<bool> ProviderControl::set_order(const std::vector<std::string>& order) {
  auto done = store_.set_order(order);
  if (done) refresh();
  return done;
}

std::vector<std::string> effective_order(const std::vector<std::string>& configured, const ProviderOverrides& overrides) {
  std::vector<std::string> out;
  for (const auto& name : overrides.order) {
    if (std::find(configured.begin(), configured.end(), name) != configured.end() &&
        std::find(out.begin(), out.end(), name) == out.end()) {
      out.push_back(name);
    }
  }
  for (const auto& name : configured) {
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

}  // namespace mailrelay
