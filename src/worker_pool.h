// WorkerPool: cpp-httplib's task queue, ours so that it is bounded and measurable. `threads`
// workers take accepted connections in arrival order; at most `max_queue` wait for one. Beyond
// that a connection goes to a small pool of shedding threads whose requests are answered 503
// at once (see shedding()); when those are busy too, the accept loop waits, so the kernel's
// backlog holds further clients and memory stays flat. Thread-safe.
#pragma once

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
  WorkerPool(std::size_t threads, std::size_t max_queue, std::size_t shedders = 2);
  ~WorkerPool() override;
  void enqueue(std::function<void()> fn) override;
  // Finishes every queued task, then joins the threads. Tasks enqueued later run on the caller.
  void shutdown() override;
  // Returns once no task is queued or running.
  void wait_until_idle();
  std::size_t depth() const;

  // True on a thread that serves a connection admitted beyond the queue: answer it "overloaded".
  static bool shedding();

 private:
  void work(std::deque<std::function<void()>>& queue, bool shed);

  std::size_t max_queue_;
  std::size_t max_shed_queue_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;       // a task or shutdown for the workers
  std::condition_variable shed_ready_;  // the same for the shedding threads
  std::condition_variable room_;    // space in the shed queue for the accept loop
  std::condition_variable idle_;    // nothing queued or running
  std::size_t running_ = 0;
  std::deque<std::function<void()>> queue_, shed_queue_;
  bool shutting_down_ = false;
  bool stopped_ = false;  // every worker has left
  std::vector<std::thread> threads_;
};

}  // namespace mailrelay
