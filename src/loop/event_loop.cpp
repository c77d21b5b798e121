#include "event_loop.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MAILRELAY_ASAN_FIBERS 1
#endif
// MAILRELAY_TSAN_FIBERS: a ThreadSanitizer build, which compiles this file uninstrumented
// (CMakeLists.txt) and has it announce every switch.
#if defined(MAILRELAY_TSAN_FIBERS)
#include <sanitizer/tsan_interface.h>
#endif

namespace mailrelay {

namespace ctx = boost::context;
using SteadyClock = std::chrono::steady_clock;

namespace {
thread_local EventLoop* this_loop = nullptr;
thread_local void* thread_local_value = nullptr;  // fiber_local() off a fiber
constexpr int kMaxWait = 100;                      // ms: epoll_wait never sleeps longer
constexpr std::size_t kPooledStacks = 64;          // per loop, kept for the next fibers
// Fibers run per round before the loop looks at its sockets and timers again: a round stays
// short (a send's CPU is about 0.2 ms) even with thousands runnable.
constexpr std::size_t kBatch = 64;
}  // namespace

// Fiber stacks: mmap'd with a guard page below; freed ones are kept for reuse (up to
// kPooledStacks) so a request costs no system call for its stack.
class StackPool {
 public:
  explicit StackPool(std::size_t bytes) : size_(round_up(bytes)), page_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) {}
  ~StackPool() {
    for (void* base : free_) ::munmap(base, size_ + page_);
  }
  ctx::stack_context allocate() {
    void* base;
    if (!free_.empty()) {
      base = free_.back();
      free_.pop_back();
    } else {
      base = ::mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (base == MAP_FAILED) throw std::bad_alloc();
      ::mprotect(base, page_, PROT_NONE);  // the guard: an overflow faults instead of corrupting
    }
    ctx::stack_context sc;
    sc.size = size_;
    sc.sp = static_cast<char*>(base) + page_ + size_;
    return sc;
  }
  void deallocate(ctx::stack_context& sc) {
    void* base = static_cast<char*>(sc.sp) - size_ - page_;
    if (free_.size() < kPooledStacks) {
      free_.push_back(base);
    } else {
      ::munmap(base, size_ + page_);
    }
  }
  std::size_t size() const { return size_; }

 private:
  static std::size_t round_up(std::size_t bytes) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return (std::max<std::size_t>(bytes, 16 * 1024) + page - 1) / page * page;
  }
  const std::size_t size_;
  const std::size_t page_;
  std::vector<void*> free_;
};

struct Fiber;
namespace {
struct PooledStack {
  StackPool* pool;
  Fiber* fiber;
  ctx::stack_context allocate();
  void deallocate(ctx::stack_context& sc) { pool->deallocate(sc); }
};
}  // namespace

struct Fiber {
  EventLoop* loop = nullptr;
  EventLoop::Callback fn;
  ctx::fiber context;  // the fiber itself while it is not running
  void* local = nullptr;
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
  void* asan_fake = nullptr;
  void* tsan = nullptr;
};

namespace {
ctx::stack_context PooledStack::allocate() {
  ctx::stack_context sc = pool->allocate();
  fiber->stack_bottom = static_cast<char*>(sc.sp) - sc.size;  // for AddressSanitizer
  return sc;
}
}  // namespace

// ---- switching (the only place contexts change; sanitizers are told here) ----

void EventLoop::switch_to(Fiber* f) {
  current_ = f;
#ifdef MAILRELAY_ASAN_FIBERS
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack_bottom, f->stack_size);
#endif
#ifdef MAILRELAY_TSAN_FIBERS
  __tsan_switch_to_fiber(f->tsan, 0);
#endif
  f->context = std::move(f->context).resume();
#ifdef MAILRELAY_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  current_ = nullptr;
  if (!f->context) finished(f);
}

void suspend() {
  EventLoop* loop = this_loop;
  Fiber* f = loop ? loop->current_ : nullptr;
  if (!f) return;
  auto* scheduler = static_cast<ctx::fiber*>(loop->scheduler_);
#ifdef MAILRELAY_ASAN_FIBERS
  __sanitizer_start_switch_fiber(&f->asan_fake, loop->main_bottom_, loop->main_size_);
#endif
#ifdef MAILRELAY_TSAN_FIBERS
  __tsan_switch_to_fiber(loop->tsan_main_, 0);
#endif
  *scheduler = std::move(*scheduler).resume();
#ifdef MAILRELAY_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(f->asan_fake, &loop->main_bottom_, &loop->main_size_);
#endif
}

void EventLoop::finished(Fiber* f) {
#ifdef MAILRELAY_TSAN_FIBERS
  __tsan_destroy_fiber(f->tsan);
#endif
  delete f;
  --fibers_;
}

void EventLoop::spawn(Callback fn, bool urgent) {
  auto* f = new Fiber;
  f->loop = this;
  f->fn = std::move(fn);
  f->stack_size = stacks_->size();
#ifdef MAILRELAY_TSAN_FIBERS
  f->tsan = __tsan_create_fiber(0);
#endif
  ++fibers_;
  f->context = ctx::fiber(std::allocator_arg, PooledStack{stacks_.get(), f}, [f](ctx::fiber&& scheduler) {
    EventLoop* loop = f->loop;
#ifdef MAILRELAY_ASAN_FIBERS
    __sanitizer_finish_switch_fiber(nullptr, &loop->main_bottom_, &loop->main_size_);
#endif
    *static_cast<ctx::fiber*>(loop->scheduler_) = std::move(scheduler);
    try {
      f->fn();
    } catch (...) {
      // A fiber's work reports its own errors; nothing may unwind past the fiber's first frame.
    }
    f->fn = nullptr;
#ifdef MAILRELAY_ASAN_FIBERS
    __sanitizer_start_switch_fiber(nullptr, loop->main_bottom_, loop->main_size_);
#endif
#ifdef MAILRELAY_TSAN_FIBERS
    __tsan_switch_to_fiber(loop->tsan_main_, 0);
#endif
    return std::move(*static_cast<ctx::fiber*>(loop->scheduler_));
  });
  if (urgent) {
    urgent_.push_back(f);
    ++runnable_n_;
  } else {
    resume(f);
  }
}

void EventLoop::resume(Fiber* f) {
  runnable_.push_back(f);
  ++runnable_n_;
}

// ---- the loop ----

EventLoop::EventLoop(std::size_t stack_bytes)
    : stacks_(std::make_unique<StackPool>(stack_bytes)), scheduler_(new ctx::fiber()) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
}

EventLoop::~EventLoop() {
  stop();
  ::close(epoll_fd_);
  ::close(wake_fd_);
  delete static_cast<ctx::fiber*>(scheduler_);
}

void EventLoop::start(const std::string& name) {
  thread_ = std::thread([this, name] {
    ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
    run();
  });
}

void EventLoop::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  thread_.join();
}

EventLoop* EventLoop::current() { return this_loop; }

void EventLoop::post(Callback fn) {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    posted_.push_back(std::move(fn));
  }
  if (!woken_.exchange(true)) {
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
}

void EventLoop::watch(int fd, std::uint32_t events, FdCallback cb) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  auto it = watchers_.find(fd);
  const bool known = it != watchers_.end();
  // A descriptor closed without unwatch() left the set on its own; its number may be back.
  if (::epoll_ctl(epoll_fd_, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
    ::epoll_ctl(epoll_fd_, known ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
  }
  if (known) {
    it->second = std::make_shared<Watcher>(Watcher{std::move(cb)});  // the old one may be running
  } else {
    watchers_.emplace(fd, std::make_shared<Watcher>(Watcher{std::move(cb)}));
  }
}

void EventLoop::unwatch(int fd) {
  if (watchers_.erase(fd) > 0) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::add_timer(TimePoint at, Callback cb) {
  const TimerId id = next_timer_++;
  timers_.emplace(id, std::move(cb));
  timer_heap_.emplace(at, id);
  return id;
}

void EventLoop::cancel_timer(TimerId id) { timers_.erase(id); }

void EventLoop::run() {
  this_loop = this;
  thread_id_ = std::this_thread::get_id();
#ifdef MAILRELAY_TSAN_FIBERS
  tsan_main_ = __tsan_get_current_fiber();
#endif
  std::vector<epoll_event> events(256);
  std::vector<Callback> posted;
  std::vector<Fiber*> batch;
  while (!stopping_) {
    last_turn_.store(SteadyClock::now().time_since_epoch().count(), std::memory_order_relaxed);
    poll_once(events);
    if (woken_.exchange(false)) {
      std::lock_guard<std::mutex> lock(post_mutex_);
      posted.swap(posted_);
    }
    for (auto& fn : posted) fn();
    posted.clear();
    run_due_timers();
    // Urgent fibers first, then at most kBatch of the others in the order they became
    // runnable; the rest wait a round, so sockets and timers are looked at between them.
    batch.swap(urgent_);
    for (std::size_t i = 0; i < kBatch && !runnable_.empty(); ++i) {
      batch.push_back(runnable_.front());
      runnable_.pop_front();
    }
    runnable_n_ -= batch.size();
    for (Fiber* f : batch) switch_to(f);
    batch.clear();
  }
  this_loop = nullptr;
}

// Waits for sockets (not at all when fibers are runnable; at most until the next timer) and runs
// their watchers.
void EventLoop::poll_once(std::vector<epoll_event>& events) {
  int timeout = kMaxWait;
  if (!runnable_.empty() || !urgent_.empty()) {
    timeout = 0;
  } else {
    while (!timer_heap_.empty() && timers_.count(timer_heap_.top().second) == 0) timer_heap_.pop();
    if (!timer_heap_.empty()) {
      auto wait = std::chrono::ceil<std::chrono::milliseconds>(timer_heap_.top().first - SteadyClock::now()).count();
      timeout = static_cast<int>(std::clamp<long long>(wait, 0, kMaxWait));
    }
  }
  const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
  for (int i = 0; i < n; ++i) {
    const int fd = events[i].data.fd;
    if (fd == wake_fd_) {
      std::uint64_t count;
      (void)!::read(wake_fd_, &count, sizeof(count));
      continue;
    }
    auto it = watchers_.find(fd);
    if (it == watchers_.end()) continue;  // unwatched by an earlier callback of this round
    std::shared_ptr<Watcher> w = it->second;  // alive through its callback even if unwatched
    w->cb(events[i].events);
  }
}

void EventLoop::run_due_timers() {
  const auto now = SteadyClock::now();
  while (!timer_heap_.empty() && timer_heap_.top().first <= now) {
    const TimerId id = timer_heap_.top().second;
    timer_heap_.pop();
    auto it = timers_.find(id);
    if (it == timers_.end()) continue;
    Callback fn = std::move(it->second);
    timers_.erase(it);
    fn();
  }
}

// ---- what code on a fiber calls ----

Fiber* current_fiber() { return this_loop ? this_loop->current_ : nullptr; }

void yield_fiber() {
  Fiber* f = current_fiber();
  if (!f) return;
  f->loop->resume(f);
  suspend();
}

bool wait_fd(int fd, std::uint32_t events, std::chrono::milliseconds timeout) {
  Fiber* f = current_fiber();
  if (!f) {
    pollfd p{fd, static_cast<short>(((events & EPOLLIN) ? POLLIN : 0) | ((events & EPOLLOUT) ? POLLOUT : 0)), 0};
    int ms = static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, timeout.count()));
    int r;
    do {
      r = ::poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    return r > 0;
  }
  EventLoop* loop = f->loop;
  bool woken = false;
  bool ready = false;
  loop->watch(fd, events, [&, f, loop](std::uint32_t) {
    if (woken) return;
    woken = ready = true;
    loop->resume(f);
  });
  const EventLoop::TimerId timer = loop->add_timer(SteadyClock::now() + timeout, [&, f, loop] {
    if (woken) return;
    woken = true;
    loop->resume(f);
  });
  suspend();
  loop->unwatch(fd);
  loop->cancel_timer(timer);
  return ready;
}

void sleep_for(std::chrono::milliseconds duration) {
  Fiber* f = current_fiber();
  if (!f) {
    std::this_thread::sleep_for(duration);
    return;
  }
  EventLoop* loop = f->loop;
  loop->add_timer(SteadyClock::now() + duration, [f, loop] { loop->resume(f); });
  suspend();
}

void* fiber_local() {
  Fiber* f = current_fiber();
  return f ? f->local : thread_local_value;
}

void set_fiber_local(void* value) {
  Fiber* f = current_fiber();
  (f ? f->local : thread_local_value) = value;
}

namespace {
// A fixed pool of threads for jobs that must block; created on first use, lives as long as the
// process (its threads are detached: a job still running at exit is abandoned).
class BlockingPool {
 public:
  static BlockingPool& instance() {
    static BlockingPool* pool = new BlockingPool(4);
    return *pool;
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
  }

 private:
  explicit BlockingPool(int threads) {
    for (int i = 0; i < threads; ++i) {
      std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "mailrelay-block");
        for (;;) {
          std::function<void()> job;
          {
            std::unique_lock<std::mutex> lock(mutex_);
            ready_.wait(lock, [&] { return !jobs_.empty(); });
            job = std::move(jobs_.front());
            jobs_.pop_front();
          }
          job();
        }
      }).detach();
    }
  }
  std::mutex mutex_;  // guards jobs_
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;  // guarded by mutex_
};
}  // namespace

void run_blocking(const std::function<void()>& job) {
  Fiber* f = current_fiber();
  if (!f) {
    job();
    return;
  }
  EventLoop* loop = f->loop;
  // The loop runs the posted resume only after this fiber suspended: both happen on its thread.
  BlockingPool::instance().submit([&job, f, loop] {
    job();
    loop->post([f, loop] { loop->resume(f); });
  });
  suspend();
}

void run_all(std::vector<std::function<void()>>& jobs) {
  Fiber* f = current_fiber();
  if (!f) {
    for (auto& job : jobs) job();
    return;
  }
  EventLoop* loop = f->loop;
  std::size_t left = jobs.size();
  // Spawned fibers run only after this one suspends (same thread); the last one to end wakes it.
  for (auto& job : jobs) {
    loop->spawn([&job, &left, f, loop] {
      try {
        job();
      } catch (...) {
        // A job reports its own failures; it still counts as done.
      }
      if (--left == 0) loop->resume(f);
    });
  }
  while (left > 0) suspend();
}

}  // namespace mailrelay
