#include "front_door.h"

#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "api_error.h"
#include "request_framing.h"
#include "request_id.h"
#include "routes.h"

namespace mailrelay {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kMaxHead = 64 * 1024;
// Reads go straight into the connection's buffer: a head in pieces of kHeadChunk (so that an idle
// or small request costs a few KiB, not the largest read), a body in pieces of up to kReadChunk.
constexpr std::size_t kHeadChunk = 4 * 1024;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr milliseconds kSweepEvery{100};
constexpr const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
// Bodies whose caller is unknown from the head (webhooks, signed in their body) share this part
// of --max-body-bytes-in-flight.
constexpr std::uint64_t kUnauthenticatedShare = 16;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch()).count();
}

void numeric_address(const sockaddr* addr, socklen_t len, std::string& ip, int& port) {
  char host[NI_MAXHOST] = "";
  char serv[NI_MAXSERV] = "";
  if (::getnameinfo(addr, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(serv);
  }
}

// The answer to a connection the table has no room for: sent without reading anything (the
// socket's buffer takes it), then closed.
void refuse_connection(int fd, const char* why) {
  const std::string id = new_request_id();
  const std::string body = error_json(id, "overloaded", why).dump();
  const std::string answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                             "X-Request-Id: " + id + "\r\nContent-Length: " + std::to_string(body.size()) +
                             "\r\nConnection: close\r\n\r\n" + body;
  (void)!::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

}  // namespace

// One event loop and the connections it reads (its thread's own: no lock).
struct FrontDoor::Shard {
  Shard(std::size_t stack_bytes, bool is_first) : loop(stack_bytes), first(is_first) {}
  EventLoop loop;
  const bool first;  // trims the allocator for all
  std::unordered_map<int, std::unique_ptr<Connection>> waiting;
  // Shard 0's sweep: when the allocator was last trimmed.
  bool busy_since_trim = false;
  SteadyClock::time_point idle_since{};
};

// A client connection: its bytes, and the request being read from them. It belongs to one shard:
// the loop holds it while a request arrives, a fiber of the same loop while it is served; whoever
// holds the unique_ptr owns the socket.
struct FrontDoor::Connection {
  enum class Phase { kHead, kBody, kReady };

  Connection(int socket, FrontDoor& door, Shard& home, std::string ip, int port)
      : fd(socket), owner(door), shard(home), remote_ip(std::move(ip)), remote_port(port) {
    int one = 1;  // answers are small: Nagle + delayed ACK would add 40 ms each
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    idle_since = SteadyClock::now();
  }
  ~Connection() {
    if (registered) shard.loop.unwatch(fd);
    owner.release_body(*this);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    owner.closed_one(remote_ip);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Nothing of a next request has arrived.
  bool idle() const { return phase == Phase::kHead && in.empty() && !lingering; }

  // Answered as it stands (refused, or given up on): no more of it is read, and the connection
  // lingers, then closes, after the answer.
  void stop_reading() {
    body_unread = true;
    phase = Phase::kReady;
  }
  // The client stopped sending (EOF, or too slow) before the request was whole: answered 400.
  void give_up(SteadyClock::time_point now) {
    ctx.incomplete = true;
    ctx.arriving = now - first_byte;
    stop_reading();
  }

  // Forgets the request just answered; what the client pipelined after it stays in `in`.
  void next_request() {
    phase = Phase::kHead;
    scan = {};
    req = httplib::Request{};
    std::string().swap(body);
    chunks = ChunkedDecoder{};
    body_left = limit = 0;
    keep_alive = head_only = body_unread = false;
    ctx.reset();
    if (in.capacity() > 4 * kHeadChunk) in.shrink_to_fit();
  }

  bool flush(const std::string& out) {
    std::size_t sent = 0;
    while (sent < out.size()) {
      ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        registered = false;  // wait_fd takes the descriptor's watch over
        if (!wait_fd(fd, EPOLLOUT, owner.settings_.write_timeout)) return false;  // the fiber waits
        continue;
      }
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  const int fd;
  FrontDoor& owner;
  Shard& shard;
  const std::string remote_ip;
  const int remote_port;
  std::string in;              // bytes received and not yet taken into a request
  // The request being read.
  Phase phase = Phase::kHead;
  HeadScan scan;
  httplib::Request req;        // its head, then its body
  std::string body;            // its body as it arrives (decoded when chunked)
  ChunkedDecoder chunks;
  std::uint64_t body_left = 0; // Content-Length bytes still to come
  std::uint64_t limit = 0;     // its body limit, from the access phase
  bool keep_alive = false, head_only = false;
  bool body_unread = false;    // answered before its body was read: the connection lingers, then closes
  RequestContext ctx;
  std::uint64_t reserved = 0;         // body bytes counted against --max-body-bytes-in-flight
  std::uint64_t unauthenticated = 0;  // of which in the unauthenticated share
  std::size_t requests = 0;
  SteadyClock::time_point first_byte, last_byte, idle_since;
  // In the loop's epoll set, edge-triggered, from the first watch until a write had to wait: it
  // stays there while a fiber serves the connection (its events are ignored then), so a request
  // costs no epoll_ctl. Every read goes on until EAGAIN or a whole request, so no edge is lost.
  bool registered = false;
  // Closing: our answer is sent and our side shut down; what the client still sends (the rest
  // of a refused body) is read and dropped, so that the kernel does not answer it with a reset
  // that could destroy the answer before the client reads it (nginx's lingering close).
  bool lingering = false;
};

FrontDoor::FrontDoor(FrontDoorSettings settings) : settings_(settings) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::size_t n = settings_.event_threads;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < n; ++i) shards_.push_back(std::make_unique<Shard>(settings_.fiber_stack_bytes, i == 0));
  // Started once shards_ is whole: the loops read it.
  for (std::size_t i = 0; i < n; ++i) {
    Shard& shard = *shards_[i];
    shard.loop.start("mailrelay-loop" + std::to_string(i));
    shard.loop.post([this, &shard] { sweep(shard); });
  }
}

FrontDoor::~FrontDoor() {
  shutdown();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(wake_fd_);
}

int FrontDoor::bind(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int r = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); r != 0) {
    errno = r == EAI_SYSTEM ? errno : EADDRNOTAVAIL;
    return -1;
  }
  int error = EADDRNOTAVAIL;
  for (addrinfo* ai = found; ai && listen_fd_ < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      error = errno;
      continue;
    }
    // SO_REUSEADDR only: with SO_REUSEPORT a second daemon on the same address would start and
    // take half the traffic.
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 4096) != 0) {
      error = errno;
      ::close(fd);
      continue;
    }
    listen_fd_ = fd;
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0) {
    errno = error;
    return -1;
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string ip;
  numeric_address(reinterpret_cast<sockaddr*>(&addr), len, ip, port);
  return port;
}

bool FrontDoor::serve() {
  if (listen_fd_ < 0 || stop_accepting_) return false;
  running_ = true;
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (!stop_accepting_) {
    accept_turn_ = now_ns();
    if (::poll(fds, 2, 100) <= 0) continue;
    // A bounded number per turn, so that the watchdog sees the loop turn under a flood.
    for (int i = 0; i < 256 && !stop_accepting_; ++i) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        accepted(fd);
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of descriptors: the loops close idle connections (the sweep, or the next accept at
      // the limit); the backlog holds the rest meanwhile.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        for (auto& shard : shards_) {
          Shard* s = shard.get();
          s->loop.post([this, s] { evict_one(*s); });
        }
        std::this_thread::sleep_for(milliseconds(10));
      }
      break;
    }
  }
  running_ = false;
  return true;
}

void FrontDoor::accepted(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  std::string ip;
  int port = 0;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) numeric_address(reinterpret_cast<sockaddr*>(&addr), len, ip, port);
  {
    std::lock_guard<std::mutex> lock(per_ip_mutex_);
    std::size_t& mine = per_ip_[ip];
    if (settings_.max_connections_per_ip > 0 && mine >= settings_.max_connections_per_ip) {
      ++refused_;
      refuse_connection(fd, "too many connections from this address (--max-connections-per-ip)");
      return;
    }
    ++mine;
  }
  const bool full = ++connections_ > settings_.max_connections;
  Shard& shard = *shards_[next_shard_++ % shards_.size()];
  shard.loop.post([this, &shard, fd, full, ip = std::move(ip), port]() mutable {
    // At the limit, a connection that has sent no request makes room; when there is none, the
    // new one is refused (every connection of this loop has a request in progress).
    if (full && !evict_one(shard)) {
      ++refused_;
      refuse_connection(fd, "the connection table is full of requests in progress");
      closed_one(ip);
      return;
    }
    watch(std::make_unique<Connection>(fd, *this, shard, std::move(ip), port));
  });
}

// Closes one connection of this loop that has sent no whole request: a lingering one, else the
// longest idle keep-alive one, else the one whose head began longest ago.
bool FrontDoor::evict_one(Shard& shard) {
  int victim = -1;
  int rank = 3;
  SteadyClock::time_point since = SteadyClock::time_point::max();
  for (const auto& [fd, connection] : shard.waiting) {
    const Connection& c = *connection;
    int r;
    SteadyClock::time_point t;
    if (c.lingering) {
      r = 0, t = c.first_byte;
    } else if (c.idle()) {
      r = 1, t = c.idle_since;
    } else if (c.phase == Connection::Phase::kHead) {
      r = 2, t = c.first_byte;
    } else {
      continue;  // a head admitted by the access phase: its body is arriving
    }
    if (r < rank || (r == rank && t < since)) victim = fd, rank = r, since = t;
  }
  if (victim < 0) return false;
  take(shard, victim);
  ++evicted_;
  return true;
}

RequestContext& FrontDoor::context(const httplib::Request& /*req*/) {
  if (auto* c = static_cast<Connection*>(fiber_local())) return c->ctx;
  thread_local RequestContext scratch;  // not a request of ours (cannot happen for our routes)
  scratch = RequestContext{};
  return scratch;
}

bool FrontDoor::alive(milliseconds max_age) const {
  const auto now = SteadyClock::now();
  for (const auto& shard : shards_) {
    if (now - shard->loop.last_turn() > max_age) return false;
  }
  const auto accepted_at = SteadyClock::time_point(std::chrono::nanoseconds(accept_turn_.load()));
  return !running_ || now - accepted_at <= max_age;
}

std::size_t FrontDoor::queue_depth() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) n += shard->loop.runnable();
  return n;
}

bool FrontDoor::reserve_body(Connection& c, std::uint64_t body) {
  if (body <= c.reserved) return true;
  const std::uint64_t more = body - c.reserved;
  if (!c.ctx.authenticated) {
    const std::uint64_t share = settings_.max_body_bytes_in_flight / kUnauthenticatedShare;
    if (unauthenticated_bytes_.fetch_add(more) + more > share) {
      unauthenticated_bytes_ -= more;
      return false;
    }
    c.unauthenticated += more;
  }
  if (body_bytes_.fetch_add(more) + more > settings_.max_body_bytes_in_flight) {
    body_bytes_ -= more;
    return false;
  }
  c.reserved = body;
  return true;
}

void FrontDoor::release_body(Connection& c) {
  body_bytes_ -= c.reserved;
  unauthenticated_bytes_ -= c.unauthenticated;
  c.reserved = c.unauthenticated = 0;
}

void FrontDoor::closed_one(const std::string& ip) {
  --connections_;
  std::lock_guard<std::mutex> lock(per_ip_mutex_);
  auto it = per_ip_.find(ip);
  if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
}

bool FrontDoor::take_in(Connection& c) {
  if (c.phase == Connection::Phase::kHead && take_head(c)) return true;
  return c.phase == Connection::Phase::kBody && take_body(c);
}

// The head: found, parsed strictly, then the access phase. True when the request is ready to be
// answered without a body (none, or refused).
bool FrontDoor::take_head(Connection& c) {
  // Empty lines before the request line are skipped (RFC 9112 section 2.2), however they arrive.
  if (c.scan.line_start == 0) {
    if (const std::size_t skip = leading_empty_lines(c.in)) {
      c.in.erase(0, skip);
      c.scan = {};
    }
  }
  if (c.in.empty()) return false;
  FramingError error;
  const std::optional<std::size_t> end = find_head_end(c.in, c.scan, kMaxHead, error);
  if (end && *end == 0) return false;
  RequestHead head;
  if (!end || !parse_head(std::string_view(c.in).substr(0, *end), head, error)) {
    c.ctx.framing_error = std::move(error);
    c.stop_reading();
    return true;
  }
  c.in.erase(0, *end);  // what follows is its body, or the next request
  httplib::Request& req = c.req;
  req.method = std::move(head.method);
  req.target = std::move(head.target);
  req.version = head.minor_version == 0 ? "HTTP/1.0" : "HTTP/1.1";
  req.headers = std::move(head.fields);
  req.remote_addr = c.remote_ip;
  req.remote_port = c.remote_port;
  // The path: origin-form up to the query, or the path of an absolute-form target.
  std::string_view path = req.target;
  if (path.front() != '/' && path != "*") {
    const std::size_t slash = path.find('/', path.find("://") + 3);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
  }
  req.path = percent_decoded(path.substr(0, path.find('?')));
  c.keep_alive = head.keep_alive;
  c.head_only = req.method == "HEAD";
  c.ctx.chunked = head.chunked;
  c.ctx.content_length = head.content_length;
  c.limit = handlers_.admit ? handlers_.admit(req, c.ctx) : 0;
  c.phase = Connection::Phase::kReady;
  if (c.ctx.refusal) {
    c.body_unread = head.has_body();
    return true;
  }
  if (!head.has_body()) return true;
  if (!head.chunked && *head.content_length > c.limit) {
    c.ctx.framing_error = FramingError{413, "request body is larger than " + std::to_string(c.limit) + " bytes"};
    c.stop_reading();
    return true;
  }
  c.phase = Connection::Phase::kBody;
  c.body_left = head.content_length.value_or(0);
  // One allocation for a declared body (its pages are touched only as bytes arrive).
  if (!head.chunked) c.body.reserve(static_cast<std::size_t>(c.body_left));
  if (head.expect_continue && c.in.empty()) {  // the client waits for it before it sends the body
    (void)!::send(c.fd, kContinue, sizeof(kContinue) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  return false;
}

// The body as far as it has arrived; true once it is whole, or refused (bad chunk, over the
// budget).
bool FrontDoor::take_body(Connection& c) {
  bool done;
  if (c.ctx.chunked) {
    std::size_t used = 0;
    const ChunkedDecoder::Result r = c.chunks.feed(c.in, used, c.body, c.limit);
    c.in.erase(0, used);
    if (r == ChunkedDecoder::Result::kError) {
      c.ctx.framing_error = c.chunks.error();
      c.stop_reading();
      return true;
    }
    done = r == ChunkedDecoder::Result::kDone;
  } else {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(c.body_left, c.in.size()));
    c.body.append(c.in, 0, n);
    c.in.erase(0, n);
    c.body_left -= n;
    done = c.body_left == 0;
  }
  if (!reserve_body(c, c.body.size())) {
    c.ctx.over_budget = true;
    c.stop_reading();
    return true;
  }
  if (done) c.phase = Connection::Phase::kReady;
  return done;
}

FrontDoor::Progress FrontDoor::advance(Connection& c) {
  for (;;) {
    if (take_in(c)) return Progress::kReady;
    // A declared body with nothing buffered is read straight into its place.
    const bool direct = c.phase == Connection::Phase::kBody && !c.ctx.chunked && c.in.empty();
    std::string& into = direct ? c.body : c.in;
    std::size_t want = c.phase == Connection::Phase::kHead ? kHeadChunk : kReadChunk;
    if (direct) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, c.body_left));
    const std::size_t old = into.size();
    into.resize(old + want);
    ssize_t n = ::recv(c.fd, &into[old], want, MSG_DONTWAIT);
    into.resize(old + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    if (n > 0) {
      auto now = SteadyClock::now();
      if (c.phase == Connection::Phase::kHead && old == 0 && c.scan.pos == 0) c.first_byte = now;
      c.last_byte = now;
      if (direct) c.body_left -= static_cast<std::uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Progress::kNeedMore;
    // The client closed (or the connection broke) before its request was whole: answered 400.
    if (c.idle()) return Progress::kClosed;
    c.give_up(SteadyClock::now());
    return Progress::kReady;
  }
}

// On a fiber of the connection's loop: serves requests while whole ones are in memory, then gives
// the connection back to the loop.
void FrontDoor::serve(std::unique_ptr<Connection> connection) {
  Connection& c = *connection;
  set_fiber_local(&c);
  for (;;) {
    const After after = serve_one(c);
    if (after == After::kClose) return;  // the destructor closes
    if (after == After::kLinger) {
      ::shutdown(c.fd, SHUT_WR);
      c.lingering = true;
      c.first_byte = c.last_byte = SteadyClock::now();
      watch(std::move(connection));
      return;
    }
    c.idle_since = SteadyClock::now();
    const Progress p = advance(c);
    if (p == Progress::kClosed) return;
    if (p == Progress::kNeedMore) {
      watch(std::move(connection));
      return;
    }
    // A request the client pipelined: served here, after the fibers already waiting, so that a
    // busy client cannot keep its loop to itself.
    yield_fiber();
  }
}

FrontDoor::After FrontDoor::serve_one(Connection& c) {
  ++c.requests;
  const bool last = c.requests >= settings_.max_requests_per_connection;
  c.ctx.client_ip = c.remote_ip;
  c.req.body = std::move(c.body);
  httplib::Response res;
  res.status = 200;  // what a handler that sets none answers
  if (handlers_.answer) handlers_.answer(c.req, res, c.ctx);
  // A request not read whole, or one whose framing was refused, leaves bytes that must never be
  // read as a request: the connection closes after the answer, lingering.
  const bool linger = c.body_unread || c.ctx.framing_error.has_value();
  const bool close = linger || c.ctx.close_after || !c.keep_alive || last || stopping_;
  const long keep_alive_seconds = std::chrono::duration_cast<std::chrono::seconds>(settings_.idle_timeout).count();
  const std::string out = serialize_response(res, c.head_only, close, keep_alive_seconds,
                                             settings_.max_requests_per_connection - c.requests);
  release_body(c);
  c.next_request();
  if (!c.flush(out)) return After::kClose;
  if (linger) return After::kLinger;
  return close ? After::kClose : After::kNext;
}

// On the connection's loop thread (a fiber of it included).
void FrontDoor::watch(std::unique_ptr<Connection> connection) {
  if (stopping_) return;  // closed
  Shard& shard = connection->shard;
  const int fd = connection->fd;
  if (!connection->registered) {
    shard.loop.watch(fd, EPOLLIN | EPOLLRDHUP | EPOLLET, [this, &shard, fd](std::uint32_t) { readable(shard, fd); });
    connection->registered = true;
  }
  shard.waiting.emplace(fd, std::move(connection));
  ++waiting_count_;
}

std::unique_ptr<FrontDoor::Connection> FrontDoor::take(Shard& shard, int fd) {
  auto it = shard.waiting.find(fd);
  if (it == shard.waiting.end()) return nullptr;
  std::unique_ptr<Connection> connection = std::move(it->second);
  shard.waiting.erase(it);
  --waiting_count_;
  return connection;
}

void FrontDoor::dispatch(std::unique_ptr<Connection> connection) {
  ++serving_;
  Connection* c = connection.release();  // a fiber abandoned at exit keeps it
  // Health checks go first: a load balancer's probe never waits behind thousands of sends.
  const bool probe = c->req.method == "GET" && (c->req.path == "/healthz" || c->req.path == "/readyz");
  c->shard.loop.spawn(
      [this, c] {
        serve(std::unique_ptr<Connection>(c));
        --serving_;
      },
      probe);
}

// The loop reads a waiting connection as its bytes arrive and starts a fiber once a request is
// whole; it drains lingering closes.
void FrontDoor::readable(Shard& shard, int fd) {
  auto it = shard.waiting.find(fd);
  if (it == shard.waiting.end()) return;
  Connection& c = *it->second;
  if (c.lingering) {
    char sink[16 * 1024];
    ssize_t got;
    while ((got = ::recv(c.fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0) c.last_byte = SteadyClock::now();
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    take(shard, fd);  // the client closed; so do we
    return;
  }
  switch (advance(c)) {
    case Progress::kReady: dispatch(take(shard, fd)); break;
    case Progress::kNeedMore: break;
    case Progress::kClosed: take(shard, fd); break;
  }
}

// Every 100 ms on each loop: the idle and read timeouts; on the first loop, memory back to the
// kernel after a load.
void FrontDoor::sweep(Shard& shard) {
  if (stopping_) return;
  const auto now = SteadyClock::now();
  shard.loop.add_timer(now + kSweepEvery, [this, &shard] { sweep(shard); });
  if (shard.first) {
    // glibc keeps freed memory in its arenas: once idle for a second after a load, trim.
    if (serving_ == 0) {
      if (shard.busy_since_trim && now - shard.idle_since >= std::chrono::seconds(1)) {
        ::malloc_trim(0);
        shard.busy_since_trim = false;
      }
    } else {
      shard.busy_since_trim = true;
      shard.idle_since = now;
    }
  }
  std::vector<int> late;
  for (const auto& [fd, connection] : shard.waiting) {
    const Connection& c = *connection;
    bool expired;
    if (c.lingering) {
      expired = now - c.first_byte > settings_.linger_time || now - c.last_byte > settings_.read_timeout;
    } else if (c.idle()) {
      expired = now - c.idle_since > settings_.idle_timeout;
    } else {
      expired = now - c.first_byte > settings_.request_read_deadline || now - c.last_byte > settings_.read_timeout;
    }
    if (expired) late.push_back(fd);
  }
  for (int fd : late) {
    std::unique_ptr<Connection> connection = take(shard, fd);
    // A request begun and not finished in time is answered 400 (and audited); the rest close.
    if (!connection->lingering && !connection->idle()) {
      connection->give_up(now);
      dispatch(std::move(connection));
    }
  }
}

bool FrontDoor::shutdown(milliseconds grace) {
  if (shards_.empty()) return true;  // done before
  stop_accepting_ = true;
  std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  while (running_) std::this_thread::sleep_for(milliseconds(1));
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // Until the requests in progress are done, a request that arrives on an open connection is
  // still read and answered (handlers say 503 while draining, and close); then all close.
  const auto until = SteadyClock::now() + grace;
  while (serving_ > 0 && SteadyClock::now() < until) std::this_thread::sleep_for(milliseconds(5));
  const bool idle = serving_ == 0;
  stopping_ = true;
  for (auto& shard : shards_) shard->loop.stop();
  // The loops are gone: what they held is closed from here.
  for (auto& shard : shards_) {
    waiting_count_ -= shard->waiting.size();
    shard->waiting.clear();
  }
  if (!idle) {
    // Fibers still suspended were abandoned with their loops; so are the loops.
    for (auto& shard : shards_) (void)shard.release();
  }
  shards_.clear();
  return idle;
}

}  // namespace mailrelay
