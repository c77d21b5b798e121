// FrontDoor: the listening HTTP server. cpp-httplib 0.11.4 parses and routes; everything about
// connections is ours. A fixed set of event loops (--event-threads) owns the connections: a
// loop reads a connection until its whole request is in memory, and only then runs the request
// on a fiber of its own (event_loop.h), where cpp-httplib and the handlers run as blocking code
// that suspends instead of blocking. So an idle or slow client costs a buffer and a descriptor,
// and a request in flight a fiber's stack; no kernel thread is ever started per request. Nothing
// here waits for room in a queue. Request bodies in memory are bounded
// (--max-body-bytes-in-flight). Headers reach handlers as the client sent them (0.11.4
// percent-decodes values). Thread-safe; one per process.
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

#include "event_loop.h"
#include "request_context.h"

namespace mailrelay {

struct FrontDoorSettings {
  std::size_t event_threads = 0;           // 0: one per core
  std::size_t fiber_stack_bytes = 256 * 1024;
  std::uint64_t max_body_bytes_in_flight = 536870912; // all buffered bodies together (503 beyond)
  // A request must arrive whole within `request_read_deadline` of its first byte, with no gap
  // longer than `read_timeout`; otherwise it is answered 400 and the connection closed.
  std::chrono::milliseconds read_timeout{5000};
  std::chrono::milliseconds request_read_deadline{30000};
  std::chrono::milliseconds write_timeout{5000};
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

  // The request being served: valid inside a handler for `req`, on the fiber serving it (also
  // for requests cpp-httplib refused before parsing them).
  RequestContext& context(const httplib::Request& req);

  std::size_t queue_depth() const;  // fibers ready to run, waiting for their loop
  std::size_t event_threads() const { return shards_.size(); }
  std::size_t connections() const { return connections_; }
  std::size_t requests_in_progress() const { return serving_; }
  // Connections with their loop only: idle, or with a request still arriving.
  std::size_t idle_connections() const { return waiting_count_; }
  std::uint64_t body_bytes_in_flight() const { return body_bytes_; }

  struct Connection;
  struct Shard;  // one event loop and the connections it reads

 private:
  enum class Progress { kNeedMore, kReady, kClosed };
  // After an answer: serve the next request, close, or close after reading what the client still sends.
  enum class After { kNext, kClose, kLinger };

  bool process_and_close_socket(socket_t sock) override;
  // Reads what `c` has ready; kReady once a request (or a refusal's head) is in memory.
  Progress advance(Connection& c);
  // The body limit of the request that `request` (its first bytes) starts.
  std::uint64_t body_limit(std::string_view request) const;
  // On a fiber: serves requests while whole ones are in memory.
  void serve(std::unique_ptr<Connection> connection);
  After serve_one(Connection& c);
  // On the loop thread: the loop reads the connection until a request is whole.
  void watch(std::unique_ptr<Connection> connection);
  void readable(Shard& shard, int fd);
  std::unique_ptr<Connection> take(Shard& shard, int fd);
  void dispatch(std::unique_ptr<Connection> connection);  // on a new fiber
  void sweep(Shard& shard);
  bool reserve_body(Connection& c, std::uint64_t body);
  void release_body(Connection& c);
  void closed_one();

  FrontDoorSettings settings_;
  std::function<void(httplib::Request&, RequestContext&)> hook_;  // constant once serving
  std::vector<std::pair<std::string, std::uint64_t>> body_limits_;  // constant once serving
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<std::size_t> next_shard_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> max_body_bytes_{10485760};
  std::atomic<std::uint64_t> body_bytes_{0};
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> waiting_count_{0};
  std::atomic<std::size_t> serving_{0};  // requests on fibers
  std::mutex accept_mutex_;  // orders connections_'s changes with accept_room_'s waits (no lost wake-up)
  std::condition_variable accept_room_;  // a connection closed; guarded by accept_mutex_
};

}  // namespace mailrelay
