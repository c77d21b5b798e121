// EventLoop: one thread that owns an epoll set, timers and the fibers it runs. A fiber is a
// stackful coroutine (boost::context::fiber) with its own small stack: code on it reads as
// blocking code, and where it would block (a socket not ready, a sleep, a libcurl transfer, a
// job on the blocking pool) it suspends and the loop runs something else. So a request in flight
// costs a fiber's stack (the pages it touched, a few KiB) and no kernel thread.
//
// Everything here except post() and the free functions' "elsewhere" cases runs on the loop's
// thread. The free functions work anywhere: on a fiber they suspend it; on any other thread
// (tests, the main thread, check-config) they block that thread as the blocking call would.
// A fiber must never hold a mutex across a suspension point: the next fiber on the same thread
// would lock it again.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace mailrelay {

struct Fiber;
class StackPool;

class EventLoop {
 public:
  using Callback = std::function<void()>;
  using FdCallback = std::function<void(std::uint32_t events)>;
  using TimePoint = std::chrono::steady_clock::time_point;
  using TimerId = std::uint64_t;

  // `stack_bytes` per fiber (reserved address space; only touched pages cost memory), with a
  // guard page below each.
  explicit EventLoop(std::size_t stack_bytes = 256 * 1024);
  ~EventLoop();  // stop()
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void start(const std::string& name);
  // Thread-safe. Ends the loop and joins its thread. Fibers still suspended are abandoned: their
  // stacks are never given back (the process is ending).
  void stop();

  // Thread-safe: runs `fn` on the loop thread soon (not on a fiber: it must not suspend).
  void post(Callback fn);

  // Loop thread only.
  // Runs `fn` on a new fiber. An urgent one (a health check) runs before every fiber already
  // waiting for the loop.
  void spawn(Callback fn, bool urgent = false);
  void watch(int fd, std::uint32_t events, FdCallback cb);  // level-triggered; replaces a watch
  void unwatch(int fd);
  TimerId add_timer(TimePoint at, Callback cb);
  void cancel_timer(TimerId id);
  void resume(Fiber* fiber);  // a suspended fiber becomes runnable

  std::size_t fibers() const { return fibers_; }       // alive: running, runnable or suspended
  std::size_t runnable() const { return runnable_n_; }  // waiting for the loop's attention
  bool running_here() const { return std::this_thread::get_id() == thread_id_; }
  // Thread-safe: when the loop last began a turn (it turns at least every 100 ms while it is
  // well); what the systemd watchdog is fed from.
  std::chrono::steady_clock::time_point last_turn() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_turn_.load(std::memory_order_relaxed)));
  }

  static EventLoop* current();  // the loop of this thread, or nullptr

 private:
  friend struct Fiber;
  friend void suspend();
  friend Fiber* current_fiber();
  void run();
  void poll_once(std::vector<epoll_event>& events);  // one epoll_wait and its watchers
  void run_due_timers();
  void switch_to(Fiber* fiber);
  void finished(Fiber* fiber);

  struct Watcher {
    FdCallback cb;
  };

  std::unique_ptr<StackPool> stacks_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::thread::id thread_id_;
  std::atomic<bool> stopping_{false};

  std::mutex post_mutex_;  // guards posted_
  std::vector<Callback> posted_;  // guarded by post_mutex_
  std::atomic<bool> woken_{false};
  std::atomic<std::chrono::steady_clock::rep> last_turn_{std::chrono::steady_clock::now().time_since_epoch().count()};

  // The loop thread's own:
  std::unordered_map<int, std::shared_ptr<Watcher>> watchers_;
  std::priority_queue<std::pair<TimePoint, TimerId>, std::vector<std::pair<TimePoint, TimerId>>, std::greater<>> timer_heap_;
  std::unordered_map<TimerId, Callback> timers_;
  TimerId next_timer_ = 1;
  std::deque<Fiber*> runnable_;
  std::vector<Fiber*> urgent_;
  std::atomic<std::size_t> runnable_n_{0};
  std::atomic<std::size_t> fibers_{0};
  Fiber* current_ = nullptr;
  void* scheduler_;  // the loop's own context while a fiber runs (boost::context::fiber*)
  // Sanitizer bookkeeping for the loop's own stack.
  const void* main_bottom_ = nullptr;
  std::size_t main_size_ = 0;
  void* tsan_main_ = nullptr;
};

// A fiber of the calling thread's loop, or nullptr (not on a fiber).
Fiber* current_fiber();
// Suspends the current fiber until someone calls EventLoop::resume() for it. On a fiber only.
void suspend();
// Lets the other runnable fibers go first. No-op off a fiber.
void yield_fiber();
// Waits until `fd` is ready for `events` (EPOLLIN / EPOLLOUT) or `timeout` passed. False on timeout.
// One waiter per descriptor at a time (a connection belongs to one fiber).
bool wait_fd(int fd, std::uint32_t events, std::chrono::milliseconds timeout);
void sleep_for(std::chrono::milliseconds duration);
// Runs `job` on the small fixed pool of threads for work that must block (file writes): the fiber
// waits, its loop does not. Off a fiber, runs it here.
void run_blocking(const std::function<void()>& job);
// Runs every job and returns when all have ended: on a fiber, each on a fiber of its own on the
// same loop, concurrently (their waits overlap); off a fiber, one after another.
void run_all(std::vector<std::function<void()>>& jobs);
// One pointer per fiber (FrontDoor: the connection a fiber serves). Off a fiber: per thread.
void* fiber_local();
void set_fiber_local(void* value);

}  // namespace mailrelay
