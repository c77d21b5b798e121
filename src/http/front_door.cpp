#include "front_door.h"

#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "request_framing.h"

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

void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  int r = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
               : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  char host[NI_MAXHOST] = "";
  char serv[NI_MAXSERV] = "";
  if (r == 0 && ::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof(host), serv, sizeof(serv),
                              NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(serv);
  }
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

// A client connection with its input buffer. It belongs to one shard: the loop holds it while
// a request arrives, a fiber of the same loop while it is served; whoever holds the unique_ptr
// owns the socket. To cpp-httplib it is a Stream that yields exactly the bytes of the current
// request, already in memory: a handler never waits for a client.
struct FrontDoor::Connection final : public httplib::Stream {
  Connection(int socket, FrontDoor& door, Shard& home) : fd(socket), owner(door), shard(home) {
    int one = 1;  // answers are small: Nagle + delayed ACK would add 40 ms each
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    address_of(fd, true, remote_ip, remote_port);
    address_of(fd, false, local_ip, local_port);
    idle_since = SteadyClock::now();
    ctx.release_input = [this] { consume(); };
  }
  ~Connection() override {
    if (registered) shard.loop.unwatch(fd);
    owner.release_body(*this);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    owner.closed_one();
  }

  bool has_pending() const { return in.size() > request_end; }

  // Drops the current request's bytes, keeping what the client pipelined after it.
  void consume() {
    std::size_t end = std::min(request_end, in.size());
    if (in.capacity() > 4 * kHeadChunk) {
      in = std::string(in, end);  // a body's buffer goes back to the allocator now
    } else {
      in.erase(0, end);
    }
    in_pos = request_end = 0;
  }

  bool is_readable() const override { return in_pos < request_end; }
  bool is_writable() const override {
    registered = false;  // wait_fd took the descriptor's watch over
    return wait_fd(fd, EPOLLOUT, owner.settings_.write_timeout);
  }

  ssize_t read(char* ptr, size_t size) override {
    std::size_t n = std::min(size, request_end - std::min(in_pos, request_end));
    std::memcpy(ptr, in.data() + in_pos, n);
    in_pos += n;
    return static_cast<ssize_t>(n);  // 0 at the end of the request: never a wait
  }

  // Answers are gathered and sent by flush(): one send for head and body instead of several.
  ssize_t write(const char* ptr, size_t size) override {
    if (!head_written) {  // cpp-httplib writes an answer's head in one piece, first
      head_written = true;
      // It adds Keep-Alive unless it closes by itself; a connection a handler closes says
      // Connection: close alone.
      if (ctx.close_after) {
        out.append(without_header_line(std::string_view(ptr, size), "Keep-Alive"));
        if (out.size() >= 64 * 1024 && !flush()) return -1;
        return static_cast<ssize_t>(size);
      }
    }
    out.append(ptr, size);
    if (out.size() >= 64 * 1024 && !flush()) return -1;
    return static_cast<ssize_t>(size);
  }

  bool flush() {
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
    out.clear();
    if (out.capacity() > 4096) out.shrink_to_fit();
    return true;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = remote_ip;
    port = remote_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = local_ip;
    port = local_port;
  }
  socket_t socket() const override { return fd; }

  const int fd;
  FrontDoor& owner;
  Shard& shard;
  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;
  std::string in;              // bytes received and not yet consumed
  std::size_t in_pos = 0;      // what cpp-httplib has read of the current request
  std::size_t request_end = 0; // the current request's end in `in` (set when it is ready)
  std::string out;
  RequestContext ctx;
  std::uint64_t reserved = 0;  // body bytes counted against --max-body-bytes-in-flight
  bool continue_sent = false;  // "100 Continue" sent for the current request
  bool head_written = false;   // the current answer's head is in `out`
  std::size_t requests = 0;
  SteadyClock::time_point first_byte, last_byte, idle_since;
  // In the loop's epoll set, edge-triggered, from the first watch until a write had to wait: it
  // stays there while a fiber serves the connection (its events are ignored then), so a request
  // costs no epoll_ctl. Every read goes on until EAGAIN or a whole request, so no edge is lost.
  mutable bool registered = false;
  // Closing: our answer is sent and our side shut down; what the client still sends (the rest
  // of a refused body) is read and dropped, so that the kernel does not answer it with a reset
  // that could destroy the answer before the client reads it (nginx's lingering close).
  bool lingering = false;
};

namespace {
// What cpp-httplib gets as its task queue (and deletes when its accept loop ends). An accepted
// socket is only handed to a loop, so it is handled on the accept thread itself.
class Inline final : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};
}  // namespace

FrontDoor::FrontDoor(FrontDoorSettings settings) : settings_(settings) {
  new_task_queue = [] { return new Inline(); };
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second daemon on the
  // same address starts and takes half the traffic.
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // What its Keep-Alive header tells clients: our limits, not its defaults (5 s, 5 requests).
  set_keep_alive_timeout(std::chrono::duration_cast<std::chrono::seconds>(settings_.idle_timeout).count());
  set_keep_alive_max_count(settings_.max_requests_per_connection);
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

FrontDoor::~FrontDoor() { shutdown(); }

int FrontDoor::bind(const std::string& host, int port) {
  bool bound = port == 0 ? (port = bind_to_any_port(host)) > 0 : bind_to_port(host, port);
  // listen(2) again on a listening socket resizes its backlog.
  if (!bound || ::listen(svr_sock_, 4096) != 0) return -1;
  return port;
}

RequestContext& FrontDoor::context(const httplib::Request& /*req*/) {
  // The request this fiber is serving: cpp-httplib calls handlers on the fiber that called
  // process_request, and also for requests it refused before any hook of ours ran.
  if (auto* c = static_cast<Connection*>(fiber_local())) return c->ctx;
  thread_local RequestContext scratch;  // not a request of ours (cannot happen for our routes)
  scratch = RequestContext{};
  return scratch;
}

std::size_t FrontDoor::queue_depth() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) n += shard->loop.runnable();
  return n;
}

bool FrontDoor::reserve_body(Connection& c, std::uint64_t body) {
  const std::uint64_t more = body - c.reserved;
  if (body_bytes_.fetch_add(more) + more > settings_.max_body_bytes_in_flight) {
    body_bytes_ -= more;
    return false;
  }
  c.reserved = body;
  return true;
}

void FrontDoor::release_body(Connection& c) {
  body_bytes_ -= c.reserved;
  c.reserved = 0;
}

void FrontDoor::closed_one() {
  {
    std::lock_guard<std::mutex> lock(accept_mutex_);
    --connections_;
  }
  accept_room_.notify_one();
}

// Called by cpp-httplib's accept loop for each accepted socket.
bool FrontDoor::process_and_close_socket(socket_t sock) {
  {
    // Beyond max_connections the accept loop waits for one to close (the loops and the idle
    // timeout close connections on their own), and the kernel's backlog holds the rest.
    std::unique_lock<std::mutex> lock(accept_mutex_);
    while (connections_ >= settings_.max_connections && is_running()) {
      accept_room_.wait_for(lock, milliseconds(100));
    }
    ++connections_;
  }
  Shard& shard = *shards_[next_shard_++ % shards_.size()];
  shard.loop.post([this, &shard, sock] { watch(std::make_unique<Connection>(sock, *this, shard)); });
  return true;
}

std::uint64_t FrontDoor::body_limit(std::string_view request) const {
  std::uint64_t limit = max_body_bytes_;
  const std::size_t space = request.find(' ');
  if (space == std::string_view::npos) return limit;
  const std::string_view target = request.substr(space + 1);
  for (const auto& [prefix, bytes] : body_limits_) {
    if (target.substr(0, prefix.size()) == prefix) limit = std::min(limit, bytes);
  }
  return limit;
}

FrontDoor::Progress FrontDoor::advance(Connection& c) {
  for (;;) {
    std::string_view pending(c.in.data() + c.request_end, c.in.size() - c.request_end);
    Framing f = pending.empty() ? Framing{} : scan_request(pending, kMaxHead, body_limit(pending));
    if (f.body > c.reserved && !reserve_body(c, f.body)) {
      c.ctx.over_budget = true;
      f.state = Framing::State::kRefuse;
    }
    if (f.state != Framing::State::kNeedMore) {
      c.request_end = f.state == Framing::State::kComplete ? c.request_end + f.size : c.in.size();
      return Progress::kReady;
    }
    std::size_t want = f.head > 0 ? kReadChunk : kHeadChunk;
    if (f.head > 0) {
      if (f.length_known) {
        // One allocation for the whole request instead of doubling as it arrives, and no read
        // past it (what the client pipelined after it waits in the kernel).
        const std::size_t whole = f.head + static_cast<std::size_t>(f.body);
        c.in.reserve(c.request_end + whole);
        want = std::min(kReadChunk, whole - pending.size());
      }
      if (f.expect_continue && !c.continue_sent && pending.size() == f.head) {
        c.continue_sent = true;  // the client waits for it before it sends the body
        (void)!::send(c.fd, kContinue, sizeof(kContinue) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      }
    }
    const std::size_t old = c.in.size();
    c.in.resize(old + want);
    ssize_t n = ::recv(c.fd, &c.in[old], want, MSG_DONTWAIT);
    c.in.resize(old + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    if (n > 0) {
      auto now = SteadyClock::now();
      if (pending.empty()) c.first_byte = now;
      c.last_byte = now;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Progress::kNeedMore;
    // The client closed (or the connection broke) before its request was whole: answered 400.
    if (pending.empty()) return Progress::kClosed;
    c.ctx.incomplete = true;
    c.ctx.arriving = SteadyClock::now() - c.first_byte;
    c.request_end = c.in.size();
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
  bool closed = false;
  bool parsed = false;
  c.ctx.client_ip = c.remote_ip;
  c.head_written = false;
  hide_range(std::string_view(c.in.data(), c.request_end), c.in.data());
  // cpp-httplib refuses a method it does not know with a 400 before any hook runs: it is parsed
  // as TRACE (which no route takes) and handed to the hooks under its own name, so that it is
  // answered 405 or 404 like any other method a path does not take.
  std::string method_as_sent = stand_in_method(c.in, c.request_end);
  bool ok = process_request(c, last, closed, [&](httplib::Request& req) {
    if (!method_as_sent.empty()) req.method = method_as_sent;
    // Headers as sent: 0.11.4 percent-decodes values ("%0D%0A" becomes a CRLF, and a bearer
    // token with a "%" in it stops matching). Its own REMOTE_ADDR/REMOTE_PORT/LOCAL_* entries go
    // too: a client header of the same name can shadow them, and the addresses are in
    // req.remote_addr. Range is ignored: nothing here is a range resource.
    std::string_view request(c.in.data(), c.request_end);
    std::size_t head_end = request.find("\r\n\r\n");
    httplib::Headers raw;
    if (head_end != std::string_view::npos && head_end + 4 <= kMaxHead &&
        parse_raw_headers(request.substr(0, head_end + 4), raw)) {
      req.headers = std::move(raw);
    } else {
      c.ctx.head_malformed = true;
    }
    req.ranges.clear();
    // The loop already told the client to go on: cpp-httplib must not say it again.
    if (c.continue_sent) req.headers.erase("Expect");
    if (hook_) hook_(req, c.ctx);
    parsed = true;
  });
  // cpp-httplib refused the head itself: nothing after it can be trusted.
  const bool linger = c.ctx.close_after || !parsed;
  c.consume();
  release_body(c);
  c.continue_sent = false;
  c.ctx.reset();  // the flags the loop sets for the next request come after this
  if (!c.flush() || !ok) return After::kClose;
  // A body left unread is drained before closing even when the client asked to close (as
  // cpp-httplib's client does by default): closing at once would reset the connection under a
  // client still sending, and it would never read the answer.
  if (linger) return After::kLinger;
  return closed || last ? After::kClose : After::kNext;
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
  const std::string_view head(c->in.data(), std::min<std::size_t>(c->in.size(), 16));
  const bool probe = head.rfind("GET /healthz ", 0) == 0 || head.rfind("GET /readyz ", 0) == 0;
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
    } else if (c.in.empty()) {
      expired = now - c.idle_since > settings_.idle_timeout;
    } else {
      expired = now - c.first_byte > settings_.request_read_deadline || now - c.last_byte > settings_.read_timeout;
    }
    if (expired) late.push_back(fd);
  }
  for (int fd : late) {
    std::unique_ptr<Connection> connection = take(shard, fd);
    // A request begun and not finished in time is answered 400 (and audited); the rest close.
    if (!connection->lingering && !connection->in.empty()) {
      connection->ctx.incomplete = true;
      connection->ctx.arriving = now - connection->first_byte;
      connection->request_end = connection->in.size();
      dispatch(std::move(connection));
    }
  }
}

bool FrontDoor::shutdown(milliseconds grace) {
  if (shards_.empty()) return true;  // done before
  stop();
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
