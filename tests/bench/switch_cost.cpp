// bench_switch_cost: what suspending and resuming a request costs in each of the three designs
// considered for the event-driven core (README, "Concurrency"): a stackful fiber
// (boost::context::fiber, what the daemon uses), a C++20 coroutine, and a callback (the
// state-machine style: the continuation is a std::function). Each round trip is one suspension
// and one resumption, as a send does around each provider call. Prints ns per round trip, the
// median of 5 runs of 1,000,000 round trips each; single-threaded, no I/O.
#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <functional>
#include <vector>

#include <boost/context/fiber.hpp>

namespace {

constexpr int kRounds = 1'000'000;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double ns_per_round(F&& run) {
  std::vector<double> runs;
  for (int r = 0; r < 5; ++r) {
    const auto start = Clock::now();
    run();
    runs.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count() / kRounds);
  }
  return median(runs);
}

volatile long sink = 0;

// A stackful fiber that suspends kRounds times.
double fiber_cost() {
  return ns_per_round([] {
    namespace ctx = boost::context;
    ctx::fiber f([](ctx::fiber&& back) {
      for (int i = 0; i < kRounds; ++i) {
        sink = sink + 1;
        back = std::move(back).resume();
      }
      return std::move(back);
    });
    for (int i = 0; i <= kRounds && f; ++i) f = std::move(f).resume();
  });
}

// A C++20 coroutine that suspends kRounds times.
struct Task {
  struct promise_type {
    Task get_return_object() { return Task{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() {}
  };
  std::coroutine_handle<promise_type> handle;
};

Task counting() {
  for (int i = 0; i < kRounds; ++i) {
    sink = sink + 1;
    co_await std::suspend_always{};
  }
}

double coroutine_cost() {
  return ns_per_round([] {
    Task t = counting();
    while (!t.handle.done()) t.handle.resume();
    t.handle.destroy();
  });
}

// Callbacks: each step stores its continuation, the "loop" calls it.
double callback_cost() {
  return ns_per_round([] {
    std::function<void()> next;
    int left = kRounds;
    std::function<void()> step = [&] {
      sink = sink + 1;
      if (--left > 0) next = step;  // the state machine re-arms itself
    };
    next = step;
    while (next) {
      auto run = std::move(next);
      next = nullptr;
      run();
    }
  });
}

}  // namespace

int main() {
  std::printf("suspend+resume round trip, ns (median of 5 x %d):\n", kRounds);
  std::printf("fiber %.1f\ncoroutine %.1f\ncallback %.1f\n", fiber_cost(), coroutine_cost(), callback_cost());
  return 0;
}
