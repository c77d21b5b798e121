#include "worker_pool.h"

#include <pthread.h>

namespace mailrelay {

WorkerPool::WorkerPool(WorkerPoolSettings settings) : settings_(settings) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t i = 0; i < settings_.min_threads; ++i) start_thread();
}

WorkerPool::~WorkerPool() { shutdown(); }

bool WorkerPool::start_thread() {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, settings_.stack_bytes);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);  // shutdown() waits on threads_
  pthread_t id;
  bool ok = pthread_create(&id, &attr, &WorkerPool::thread_main, this) == 0;
  pthread_attr_destroy(&attr);
  if (ok) ++threads_;
  return ok;
}

void* WorkerPool::thread_main(void* self) {
  static_cast<WorkerPool*>(self)->work();
  return nullptr;
}

void WorkerPool::submit(std::function<void()> task) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (shutting_down_ && threads_ == 0) {
    lock.unlock();
    task();
    return;
  }
  queue_.push_back(std::move(task));
  // Every parked thread will be woken for a task of its own; start one only when none is left.
  if (waiting_ >= queue_.size()) {
    ready_.notify_one();
    return;
  }
  if (threads_ < settings_.max_threads && !shutting_down_ && start_thread()) return;
  ready_.notify_one();
}

void WorkerPool::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (queue_.empty() && !shutting_down_) {
      ++waiting_;
      bool timed_out = !ready_.wait_for(lock, settings_.idle_retire, [this] { return !queue_.empty() || shutting_down_; });
      --waiting_;
      if (timed_out && threads_ > settings_.min_threads) break;
      continue;
    }
    if (queue_.empty()) break;  // shutting down, nothing left
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();
    task();
    task = nullptr;  // what it captured goes before the task counts as done
    lock.lock();
    if (--running_ == 0 && queue_.empty()) idle_.notify_all();
  }
  --threads_;
  exited_.notify_all();
}

void WorkerPool::shutdown() {
  std::unique_lock<std::mutex> lock(mutex_);
  shutting_down_ = true;
  ready_.notify_all();
  exited_.wait(lock, [this] { return threads_ == 0; });
}

bool WorkerPool::wait_until_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_.wait_for(lock, timeout, [this] { return running_ == 0 && queue_.empty(); });
}

std::size_t WorkerPool::depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

std::size_t WorkerPool::threads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return threads_;
}

std::size_t WorkerPool::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

}  // namespace mailrelay
