// FrontDoor: the listening HTTP server. cpp-httplib 0.11.4 parses and routes; everything about
// connections is ours. One reader thread (epoll) reads every connection until its whole request
// is in memory; only then does the request get a thread from an elastic WorkerPool, so slow and
// idle clients cost a buffer and a descriptor, never a worker. Nothing here ever waits for room
// in a queue that workers drain. Request bodies in memory are bounded (--max-body-bytes-in-flight).
// Headers reach handlers as the client sent them (0.11.4 percent-decodes values). Thread-safe;
// one per process.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <httplib.h>

#include "request_context.h"
#include "worker_pool.h"

namespace mailrelay {

struct FrontDoorSettings {
  WorkerPoolSettings pool;
  std::uint64_t max_body_bytes_in_flight = 536870912; // all buffered bodies together (503 beyond)
  // A request must arrive whole within `request_read_deadline` of its first byte, with no gap
  // longer than `read_timeout`; otherwise it is answered 400 and the connection closed.
  std::chrono::milliseconds read_timeout{5000};
  std::chrono::milliseconds request_read_deadline{30000};
  std::chrono::milliseconds write_timeout{5000};
  // After an answer the worker waits this long for the client's next request before it hands
  // the connection back to the reader: a busy client skips the hand-over through epoll.
  std::chrono::milliseconds park_after{2};
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive connection with nothing sent
  std::size_t max_connections = 16384;             // beyond it the accept loop waits
  std::size_t max_requests_per_connection = 1000;
  // Lingering close (as nginx): after a refusal that left a body unread, what the client still
  // sends is read and dropped for up to this long (and no gap over read_timeout), so that it can
  // read the answer instead of a reset.
  std::chrono::milliseconds linger_time{30000};
};

class FrontDoor final : public httplib::Server {
 public:
  explicit FrontDoor(FrontDoorSettings settings);
  ~FrontDoor() override;

  // Binds and listens with a backlog of 4096 (cpp-httplib's own is 5), without SO_REUSEPORT:
  // an address another process serves is an error. `port` 0 picks a free one. Returns the port,
  // or -1 with errno set.
  int bind(const std::string& host, int port);
  // Serves until shutdown(); call on its own thread.
  bool serve() { return listen_after_bind(); }
  // Stops accepting. Until the requests in progress are done (at most `grace`), requests on open
  // connections are still answered (handlers see draining and close); then every connection
  // closes. False if requests were still running after `grace` (abandoned: the process should
  // exit).
  bool shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(60000));

  // Bodies larger than this are never buffered: the handlers refuse them from the head (413).
  // Set before serving (HttpApi::install does).
  void set_max_body_bytes(std::uint64_t bytes) {
    max_body_bytes_ = bytes;
    set_payload_max_length(bytes);
  }

  // Called for every request once its head is parsed and before any handler or routing: the
  // one place where the request may be changed (HttpApi routes here). Set before serving.
  void set_request_hook(std::function<void(httplib::Request&, RequestContext&)> hook) { hook_ = std::move(hook); }

  // Bodies of requests whose target starts with `prefix` are read up to `bytes` (when lower than
  // set_max_body_bytes); beyond, they are refused from the head like any body over the limit.
  // Set before serving.
  void set_body_limit(std::string prefix, std::uint64_t bytes) { body_limits_.emplace_back(std::move(prefix), bytes); }

  // The request being served: valid inside a handler for `req`, on the thread serving it (also
  // for requests cpp-httplib refused before parsing them).
  RequestContext& context(const httplib::Request& req);

  std::size_t queue_depth() const { return pool_.depth(); }
  std::size_t worker_threads() const { return pool_.threads(); }
  std::size_t connections() const { return connections_; }
  // Connections with the reader thread: idle, or with a request still arriving.
  std::size_t idle_connections() const;
  std::uint64_t body_bytes_in_flight() const { return body_bytes_; }

  struct Connection;

 private:
  enum class Progress { kNeedMore, kReady, kClosed };
  // After an answer: serve the next request, close, or close after reading what the client still sends.
  enum class After { kNext, kClose, kLinger };

  bool process_and_close_socket(socket_t sock) override;
  // Reads what `c` has ready; kReady once a request (or a refusal's head) is in memory.
  Progress advance(Connection& c);
  // The body limit of the request that `request` (its first bytes) starts.
  std::uint64_t body_limit(std::string_view request) const;
  void serve(std::unique_ptr<Connection> connection);
  After serve_one(Connection& c);
  void watch(std::unique_ptr<Connection> connection);  // hand to the reader thread
  void read_loop();
  void sweep(std::chrono::steady_clock::time_point now);
  void dispatch(std::unique_ptr<Connection> connection);
  bool reserve_body(Connection& c, std::uint64_t body);
  void release_body(Connection& c);
  void closed_one();

  FrontDoorSettings settings_;
  std::function<void(httplib::Request&, RequestContext&)> hook_;  // constant once serving
  std::vector<std::pair<std::string, std::uint64_t>> body_limits_;  // constant once serving
  WorkerPool pool_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<std::uint64_t> max_body_bytes_{10485760};
  std::atomic<std::uint64_t> body_bytes_{0};
  std::atomic<std::size_t> connections_{0};
  std::mutex accept_mutex_;
  std::condition_variable accept_room_;  // a connection closed; guarded by accept_mutex_

  mutable std::mutex mutex_;
  // Guarded by mutex_:
  bool reader_stop_ = false;
  std::unordered_map<int, std::unique_ptr<Connection>> waiting_;  // with the reader thread
  std::unordered_map<std::thread::id, Connection*> serving_;  // for context(): by serving thread

  // The reader thread's own (sweep): when the allocator was last trimmed.
  bool busy_since_trim_ = false;
  std::size_t threads_at_trim_ = 0;
  std::chrono::steady_clock::time_point idle_since_{};

  std::thread reader_;
};

}  // namespace mailrelay
