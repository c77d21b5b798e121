#include "worker_pool.h"

namespace mailrelay {
namespace {
thread_local bool tl_shedding = false;
}  // namespace

bool WorkerPool::shedding() { return tl_shedding; }

WorkerPool::WorkerPool(std::size_t threads, std::size_t max_queue, std::size_t shedders)
    : max_queue_(max_queue), max_shed_queue_(shedders * 4) {
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(queue_, false); });
  for (std::size_t i = 0; i < shedders; ++i) threads_.emplace_back([this] { work(shed_queue_, true); });
}

WorkerPool::~WorkerPool() { shutdown(); }

void WorkerPool::enqueue(std::function<void()> fn) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopped_) {
      lock.unlock();
      fn();
      return;
    }
    if (queue_.size() < max_queue_) {
      queue_.push_back(std::move(fn));
      lock.unlock();
      ready_.notify_one();  // one worker: waking all 256 for each task cost most of the CPU
      return;
    } else {
      // Shedding is fast (a 503 per request), so this wait is short; while it lasts, new
      // connections wait in the kernel's listen backlog instead of in our memory.
      room_.wait(lock, [this] { return shed_queue_.size() < max_shed_queue_ || shutting_down_; });
      shed_queue_.push_back(std::move(fn));
    }
  }
  shed_ready_.notify_one();
}

void WorkerPool::shutdown() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutting_down_ = true;
    threads.swap(threads_);
  }
  ready_.notify_all();
  shed_ready_.notify_all();
  room_.notify_all();
  for (auto& t : threads) t.join();
  // Tasks that came in after the last worker left run here.
  std::deque<std::function<void()>> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    left.swap(queue_);
    for (auto& task : shed_queue_) left.push_back(std::move(task));
    shed_queue_.clear();
  }
  for (auto& task : left) task();
}

void WorkerPool::wait_until_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return running_ == 0 && queue_.empty() && shed_queue_.empty(); });
}

std::size_t WorkerPool::depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

void WorkerPool::work(std::deque<std::function<void()>>& queue, bool shed) {
  tl_shedding = shed;
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      (shed ? shed_ready_ : ready_).wait(lock, [&] { return shutting_down_ || !queue.empty(); });
      if (queue.empty()) return;  // shutting down and nothing left
      task = std::move(queue.front());
      queue.pop_front();
      ++running_;
    }
    if (shed) room_.notify_one();
    task();
    task = nullptr;  // what it captured goes before the task counts as done
    std::lock_guard<std::mutex> lock(mutex_);
    if (--running_ == 0 && queue_.empty() && shed_queue_.empty()) idle_.notify_all();
  }
}

}  // namespace mailrelay
