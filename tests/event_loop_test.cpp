#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "event_loop.h"
#include "fakes/test_helpers.h"

using namespace mailrelay;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {
// Runs `fn` on the loop's thread and waits (bounded) for it to have run.
void on_loop(EventLoop& loop, std::function<void()> fn) {
  std::promise<void> done;
  loop.post([&] {
    fn();
    done.set_value();
  });
  REQUIRE(done.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
}

bool wait_until(const std::function<bool()>& what, milliseconds limit = milliseconds(10000)) {
  const auto until = steady_clock::now() + limit;
  while (!what() && steady_clock::now() < until) std::this_thread::sleep_for(milliseconds(2));
  return what();
}
}  // namespace

TEST_CASE("event loop: 2000 fibers sleeping at once cost no thread each and all wake", "[event_loop]") {
  EventLoop loop;
  loop.start("test-loop");
  const std::size_t threads = fakes::thread_count();
  std::atomic<int> woke{0};
  const auto start = steady_clock::now();
  on_loop(loop, [&] {
    for (int i = 0; i < 2000; ++i) {
      loop.spawn([&] {
        sleep_for(milliseconds(200));
        ++woke;
      });
    }
  });
  // While they sleep: one loop thread, whatever the number of fibers.
  CHECK(loop.fibers() == 2000);
  CHECK(fakes::thread_count() == threads);
  REQUIRE(wait_until([&] { return woke == 2000; }, milliseconds(120000)));
  const auto took = steady_clock::now() - start;
  CHECK(took >= milliseconds(200));
  // They slept together: one after another would take 400 s (generous: sanitizer builds are slow).
  CHECK(took < milliseconds(60000));
  REQUIRE(wait_until([&] { return loop.fibers() == 0; }));
}

TEST_CASE("event loop: a fiber waiting on a socket lets the others run, and wakes when it is readable", "[event_loop]") {
  EventLoop loop;
  loop.start("test-loop");
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair) == 0);
  std::atomic<int> ready{-1};
  std::atomic<int> timed_out{-1};
  std::atomic<int> ticks{0};
  on_loop(loop, [&] {
    loop.spawn([&] { ready = wait_fd(pair[0], EPOLLIN, milliseconds(10000)) ? 1 : 0; });
    loop.spawn([&] { timed_out = wait_fd(pair[1], EPOLLIN, milliseconds(50)) ? 1 : 0; });  // nothing for it
    loop.spawn([&] {
      for (int i = 0; i < 10; ++i) {
        sleep_for(milliseconds(5));
        ++ticks;
      }
    });
  });
  REQUIRE(wait_until([&] { return ticks == 10; }));
  CHECK(ready == -1);  // still waiting: the sleeper ran meanwhile on the same thread
  REQUIRE(wait_until([&] { return timed_out != -1; }));
  CHECK(timed_out == 0);
  REQUIRE(::write(pair[1], "x", 1) == 1);
  REQUIRE(wait_until([&] { return ready != -1; }));
  CHECK(ready == 1);
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST_CASE("event loop: a blocking job runs on the pool while the loop keeps going", "[event_loop]") {
  EventLoop loop;
  loop.start("test-loop");
  std::atomic<bool> job_done{false};
  std::atomic<bool> fiber_done{false};
  std::atomic<int> ticks_during_job{0};
  std::atomic<bool> ticker_done{false};
  std::thread::id job_thread;
  on_loop(loop, [&] {
    loop.spawn([&] {
      run_blocking([&] {
        job_thread = std::this_thread::get_id();
        std::this_thread::sleep_for(milliseconds(200));  // a slow disk
        job_done = true;
      });
      fiber_done = true;
    });
    loop.spawn([&] {
      while (!job_done) {
        sleep_for(milliseconds(10));
        ++ticks_during_job;
      }
      ticker_done = true;
    });
  });
  // Both fibers end before the loop does (a fiber still suspended when its loop is destroyed is
  // never freed: LeakSanitizer saw it on a loaded machine).
  REQUIRE(wait_until([&] { return fiber_done.load() && ticker_done.load(); }));
  CHECK(ticks_during_job >= 5);  // the loop was not blocked by the job
  std::thread::id loop_thread;
  on_loop(loop, [&] { loop_thread = std::this_thread::get_id(); });
  CHECK(job_thread != loop_thread);
}

TEST_CASE("event loop: off a fiber the same calls block the calling thread", "[event_loop]") {
  const auto start = steady_clock::now();
  sleep_for(milliseconds(30));
  CHECK(steady_clock::now() - start >= milliseconds(30));
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
  CHECK_FALSE(wait_fd(pair[0], EPOLLIN, milliseconds(20)));
  REQUIRE(::write(pair[1], "x", 1) == 1);
  CHECK(wait_fd(pair[0], EPOLLIN, milliseconds(20)));
  bool ran = false;
  run_blocking([&] { ran = true; });
  CHECK(ran);
  CHECK(current_fiber() == nullptr);
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST_CASE("event loop: fiber-local values belong to their fiber", "[event_loop]") {
  EventLoop loop;
  loop.start("test-loop");
  std::atomic<int> mismatches{0};
  std::atomic<int> done{0};
  on_loop(loop, [&] {
    for (int i = 0; i < 100; ++i) {
      loop.spawn([&, i] {
        int mine = i;
        set_fiber_local(&mine);
        for (int round = 0; round < 5; ++round) {
          yield_fiber();
          if (fiber_local() != &mine) ++mismatches;
        }
        ++done;
      });
    }
  });
  REQUIRE(wait_until([&] { return done == 100; }));
  CHECK(mismatches == 0);
}
