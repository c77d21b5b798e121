// FrontDoor: the listening HTTP/1.1 server. It accepts, reads and frames requests itself
// (request_framing.h: one strict parser), and hands each one to the API in two steps: on the loop
// thread, as soon as its head is parsed, the access phase (RequestHandlers::admit: route, token,
// body rule), which decides whether any body byte is read at all; then, once the request is whole
// in memory, the answer, on a fiber of its own (event_loop.h). So an idle or slow client costs a
// buffer and a descriptor, a request in flight a fiber's stack, and no kernel thread is ever
// started per request; nothing waits for room in a queue.
//
// Bodies in memory are counted as their bytes arrive against --max-body-bytes-in-flight; those of
// requests whose caller is not known from the head (webhooks) share at most a sixteenth of it.
// The connection table cannot be held: at --max-connections the idle keep-alive connections go
// first, then the oldest that have not sent a whole head, and one address holds at most
// --max-connections-per-ip. Thread-safe; one per process.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
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
  std::size_t max_connections = 16384;             // beyond it, idle ones are closed to make room
  std::size_t max_connections_per_ip = 256;        // 0: no limit
  std::size_t max_requests_per_connection = 1000;
  // Lingering close (as nginx): after a refusal that left a body unread, what the client still
  // sends is read and dropped for up to this long (and no gap over read_timeout), so that it can
  // read the answer instead of a reset.
  std::chrono::milliseconds linger_time{30000};
};

// What the front door asks of the API.
struct RequestHandlers {
  // On the loop thread, once the head is parsed (so it must not block or suspend): the access
  // phase. Returns the largest body the request may have, or leaves a refusal in ctx.refusal
  // (then no body byte is read and no "100 Continue" sent).
  std::function<std::uint64_t(const httplib::Request& head, RequestContext& ctx)> admit;
  // On a fiber, once the request is whole (or refused): the answer.
  std::function<void(httplib::Request& req, httplib::Response& res, RequestContext& ctx)> answer;
};

class FrontDoor {
 public:
  explicit FrontDoor(FrontDoorSettings settings);
  ~FrontDoor();
  FrontDoor(const FrontDoor&) = delete;
  FrontDoor& operator=(const FrontDoor&) = delete;

  // Binds and listens with a backlog of 4096, without SO_REUSEPORT: an address another process
  // serves is an error. `port` 0 picks a free one. Returns the port, or -1 with errno set.
  int bind(const std::string& host, int port);
  // Accepts until shutdown(); call on its own thread. False if it was not bound.
  bool serve();
  bool is_running() const { return running_; }
  // Stops accepting. Until the requests in progress are done (at most `grace`), requests on open
  // connections are still answered (handlers see draining and close); then every connection
  // closes. False if requests were still running after `grace` (abandoned: the process should
  // exit).
  bool shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(60000));

  // Set before serving.
  void set_handlers(RequestHandlers handlers) { handlers_ = std::move(handlers); }

  // The request being served: valid inside RequestHandlers::answer, on the fiber serving it.
  RequestContext& context(const httplib::Request& req);

  // True when every event loop and the accept loop turned within `max_age`: what the systemd
  // watchdog is fed from (never a request through the listener, which a full table would block).
  bool alive(std::chrono::milliseconds max_age) const;

  std::size_t queue_depth() const;  // fibers ready to run, waiting for their loop
  std::size_t event_threads() const { return shards_.size(); }
  std::size_t connections() const { return connections_; }
  std::size_t requests_in_progress() const { return serving_; }
  // Connections with their loop only: idle, or with a request still arriving.
  std::size_t idle_connections() const { return waiting_count_; }
  std::uint64_t body_bytes_in_flight() const { return body_bytes_; }
  std::uint64_t connections_evicted() const { return evicted_; }   // closed at the table's limit
  std::uint64_t connections_refused() const { return refused_; }   // over the per-address limit, or no room

  struct Connection;
  struct Shard;  // one event loop and the connections it reads

 private:
  enum class Progress { kNeedMore, kReady, kClosed };
  // After an answer: serve the next request, close, or close after reading what the client still sends.
  enum class After { kNext, kClose, kLinger };

  void accepted(int fd);
  // Reads what `c` has ready; kReady once a request (or a refusal) is ready to be answered.
  Progress advance(Connection& c);
  // Takes what is buffered into the request; true once it is ready to be answered.
  bool take_in(Connection& c);
  bool take_head(Connection& c);
  bool take_body(Connection& c);
  // On a fiber: serves requests while whole ones are in memory.
  void serve(std::unique_ptr<Connection> connection);
  After serve_one(Connection& c);
  // On the loop thread: the loop reads the connection until a request is whole.
  void watch(std::unique_ptr<Connection> connection);
  void readable(Shard& shard, int fd);
  std::unique_ptr<Connection> take(Shard& shard, int fd);
  bool evict_one(Shard& shard);
  void dispatch(std::unique_ptr<Connection> connection);  // on a new fiber
  void sweep(Shard& shard);
  bool reserve_body(Connection& c, std::uint64_t body);
  void release_body(Connection& c);
  void closed_one(const std::string& ip);

  FrontDoorSettings settings_;
  RequestHandlers handlers_;  // constant once serving
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<std::size_t> next_shard_{0};
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: wakes the accept loop to stop
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_accepting_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<std::int64_t> accept_turn_{0};  // steady clock ns of the accept loop's last turn
  std::atomic<std::uint64_t> body_bytes_{0};
  std::atomic<std::uint64_t> unauthenticated_bytes_{0};  // the part of body_bytes_ with no known caller
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> waiting_count_{0};
  std::atomic<std::size_t> serving_{0};  // requests on fibers
  std::atomic<std::uint64_t> evicted_{0}, refused_{0};
  std::mutex per_ip_mutex_;  // guards per_ip_
  std::unordered_map<std::string, std::size_t> per_ip_;  // open connections per client address
};

}  // namespace mailrelay
