// WorkerPool: an elastic pool of threads for requests that are already complete in memory.
// submit() never waits: an idle thread takes the task, else a new thread starts (small stack),
// up to `max_threads`; beyond that the task waits in a queue that only grows with the number of
// open connections (each has at most one task queued). No thread ever waits for room in the
// queue, so the pool cannot wedge on itself. Threads idle for `idle_retire` exit, down to
// `min_threads`. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>

namespace mailrelay {

struct WorkerPoolSettings {
  std::size_t min_threads = 8;        // kept warm
  std::size_t max_threads = 4352;     // sends in flight plus room for cheap answers
  std::size_t stack_bytes = 512 * 1024;
  std::chrono::milliseconds idle_retire{10000};
};

class WorkerPool {
 public:
  explicit WorkerPool(WorkerPoolSettings settings);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `task` on a pool thread soon; never blocks. After shutdown() it runs on the caller.
  void submit(std::function<void()> task);
  // Runs every queued task, then waits for all threads to exit. Blocks.
  void shutdown();
  // Returns once no task is queued or running, or `timeout` passed; true if idle.
  bool wait_until_idle(std::chrono::milliseconds timeout);

  std::size_t depth() const;    // tasks waiting for a thread
  std::size_t threads() const;  // threads alive
  std::size_t busy() const;     // tasks running

 private:
  static void* thread_main(void* self);
  void work();
  bool start_thread();  // REQUIRES: mutex_ held

  const WorkerPoolSettings settings_;
  mutable std::mutex mutex_;
  // Guarded by mutex_:
  std::condition_variable ready_;   // a task, or shutdown
  std::condition_variable idle_;    // nothing queued or running
  std::condition_variable exited_;  // a thread left
  std::deque<std::function<void()>> queue_;
  std::size_t threads_ = 0;
  std::size_t waiting_ = 0;  // threads parked in ready_.wait
  std::size_t running_ = 0;
  bool shutting_down_ = false;
};

}  // namespace mailrelay
