// FrontDoor: the listening HTTP server. cpp-httplib 0.11.4 parses and routes; everything about
// connections is ours: a bounded worker pool, idle keep-alive connections parked in epoll (no
// thread held), read deadlines, real closes, and request headers restored to the bytes the
// client sent (0.11.4 percent-decodes header values). Thread-safe; one per process.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include <httplib.h>

#include "worker_pool.h"

namespace mailrelay {

struct FrontDoorSettings {
  std::size_t threads = 256;      // requests in progress (one send each)
  std::size_t max_queue = 1024;   // connections with a request waiting for a worker
  // Longest wait for the next bytes of a request, and for the whole request (head and body)
  // from its first byte: a slow client holds a worker at most this long.
  std::chrono::milliseconds read_timeout{5000};
  std::chrono::milliseconds request_read_deadline{30000};
  std::chrono::milliseconds write_timeout{5000};
  // After an answer the worker waits this long for the client's next request before it parks
  // the connection: a busy client keeps its worker and skips the hand-over through epoll.
  std::chrono::milliseconds park_after{2};
  // A keep-alive connection between requests holds no thread, only a file descriptor.
  std::chrono::milliseconds idle_timeout{60000};
  std::size_t max_idle = 10000;
  std::size_t max_requests_per_connection = 1000;
};

class FrontDoor final : public httplib::Server {
 public:
  explicit FrontDoor(FrontDoorSettings settings);
  ~FrontDoor() override;

  // Binds and listens with a backlog of 4096 (cpp-httplib's own is 5). `port` 0 picks a free
  // one. Returns the port, or -1 with errno set.
  int bind(const std::string& host, int port);
  // Serves until shutdown(); call on its own thread.
  bool serve() { return listen_after_bind(); }
  // Stops accepting and waits for the requests in progress. Until they are done, a request on
  // a kept-alive connection is still read and answered (handlers see draining and say 503),
  // then that connection is closed; the idle ones left are closed at the end. Blocks.
  void shutdown();

  std::size_t queue_depth() const;
  std::size_t idle_connections() const;

  // For handlers, about the request this thread is serving (outside a FrontDoor: false/no-op).
  // True when its headers could not be restored from the bytes received (malformed, or a head
  // larger than 64 KiB).
  static bool request_head_malformed();
  // Answer with `Connection: close` and close for real after this response: for rejections
  // that leave the body unread, which must never be parsed as the next request.
  static void close_connection(httplib::Response& res);

  struct Connection;

 private:
  bool process_and_close_socket(socket_t sock) override;
  void serve_connection(std::unique_ptr<Connection> connection);
  void park(std::unique_ptr<Connection> connection);
  void watch_idle();
  void dispatch(std::unique_ptr<Connection> connection);

  FrontDoorSettings settings_;
  std::unique_ptr<WorkerPool> pool_;  // ours, not cpp-httplib's: it outlives the accept loop
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  mutable std::mutex mutex_;
  bool stopping_ = false;
  std::unordered_map<int, std::unique_ptr<Connection>> idle_;
  std::thread watcher_;
};

}  // namespace mailrelay
