#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "worker_pool.h"

using namespace mailrelay;
using std::chrono::milliseconds;

namespace {
// A gate the tasks wait on, opened by the test (bounded waits only).
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> lock(m);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return open; });
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(m);
      open = true;
    }
    cv.notify_all();
  }
};
}  // namespace

TEST_CASE("pool: tasks that submit tasks never wait on each other, even at the thread limit", "[worker_pool]") {
  // The old pool's deadlock in small: every worker blocked submitting into a full queue that only
  // workers drain. Here 4 threads, each task submits 50 more while all threads are busy.
  WorkerPoolSettings settings;
  settings.min_threads = 1;
  settings.max_threads = 4;
  WorkerPool pool(settings);
  Gate gate;
  std::atomic<int> done{0}, submitted{0};
  for (int i = 0; i < 4; ++i) {
    pool.submit([&] {
      for (int j = 0; j < 50; ++j, ++submitted) pool.submit([&] { ++done; });
      gate.wait();
      ++done;
    });
  }
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 500 && submitted < 200; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(submitted == 200);  // every submitter got through while the threads were held
  CHECK(pool.threads() == 4);
  gate.release();
  CHECK(pool.wait_until_idle(milliseconds(10000)));
  CHECK(done == 204);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("pool: threads start on demand up to the limit and retire when idle", "[worker_pool]") {
  WorkerPoolSettings settings;
  settings.min_threads = 2;
  settings.max_threads = 64;
  settings.idle_retire = milliseconds(200);
  WorkerPool pool(settings);
  CHECK(pool.threads() == 2);
  Gate gate;
  std::atomic<int> running{0};
  for (int i = 0; i < 40; ++i) {
    pool.submit([&] {
      ++running;
      gate.wait();
    });
  }
  for (int i = 0; i < 500 && running < 40; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(running == 40);  // all at once: none waited for another to finish
  CHECK(pool.threads() >= 40);  // (a woken idle thread may lose its task to a new one)
  CHECK(pool.threads() <= 64);
  gate.release();
  CHECK(pool.wait_until_idle(milliseconds(10000)));
  for (int i = 0; i < 500 && pool.threads() > 2; ++i) std::this_thread::sleep_for(milliseconds(10));
  CHECK(pool.threads() == 2);  // back to the floor
}

TEST_CASE("pool: shutdown runs what is queued, later tasks run on the caller", "[worker_pool]") {
  WorkerPoolSettings settings;
  settings.min_threads = 1;
  settings.max_threads = 1;
  std::atomic<int> done{0};
  {
    WorkerPool pool(settings);
    for (int i = 0; i < 100; ++i) pool.submit([&] { ++done; });
    pool.shutdown();
    CHECK(done == 100);
    pool.submit([&] { ++done; });
    CHECK(done == 101);
  }
}
