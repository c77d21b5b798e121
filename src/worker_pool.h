// WorkerPool: cpp-httplib's task queue, ours so that its depth can be measured (and bounded,
// later). A fixed set of threads takes accepted connections in arrival order. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>

namespace mailrelay {

class WorkerPool final : public httplib::TaskQueue {
 public:
  explicit WorkerPool(std::size_t threads);
  ~WorkerPool() override;
  void enqueue(std::function<void()> fn) override;
  // Finishes every queued task, then joins the threads.
  void shutdown() override;
  std::size_t depth() const;

 private:
  void work();
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  bool shutting_down_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mailrelay
