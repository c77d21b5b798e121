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

// Waits until `fd` is ready for `events`, at most `timeout`. False on timeout or error.
bool wait_for(int fd, short events, milliseconds timeout) {
  pollfd p{fd, events, 0};
  int ms = static_cast<int>(std::max<milliseconds::rep>(0, timeout.count()));
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

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

// A client connection with its input buffer. It moves between the reader thread and a worker;
// whoever holds the unique_ptr owns the socket. To cpp-httplib it is a Stream that yields exactly
// the bytes of the current request, already in memory: a handler never waits for a client.
struct FrontDoor::Connection final : public httplib::Stream {
  Connection(int socket, FrontDoor& door) : fd(socket), owner(door) {
    int one = 1;  // answers are small: Nagle + delayed ACK would add 40 ms each
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    address_of(fd, true, remote_ip, remote_port);
    address_of(fd, false, local_ip, local_port);
    idle_since = SteadyClock::now();
    ctx.release_input = [this] { consume(); };
  }
  ~Connection() override {
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
  bool is_writable() const override { return wait_for(fd, POLLOUT, owner.settings_.write_timeout); }

  ssize_t read(char* ptr, size_t size) override {
    std::size_t n = std::min(size, request_end - std::min(in_pos, request_end));
    std::memcpy(ptr, in.data() + in_pos, n);
    in_pos += n;
    return static_cast<ssize_t>(n);  // 0 at the end of the request: never a wait
  }

  // Answers are gathered and sent by flush(): one send for head and body instead of several.
  ssize_t write(const char* ptr, size_t size) override {
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
        if (!wait_for(fd, POLLOUT, owner.settings_.write_timeout)) return false;
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
  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;
  std::string in;              // bytes received and not yet consumed
  std::size_t in_pos = 0;      // what cpp-httplib has read of the current request
  std::size_t request_end = 0; // the current request's end in `in` (set when it is ready)
  std::string out;
  RequestContext ctx;
  std::uint64_t reserved = 0;  // body bytes counted against --max-body-bytes-in-flight
  bool continue_sent = false;  // "100 Continue" sent for the current request
  std::size_t requests = 0;
  SteadyClock::time_point first_byte, last_byte, idle_since;
  bool registered = false;     // known to the epoll set
  // Closing: our answer is sent and our side shut down; what the client still sends (the rest
  // of a refused body) is read and dropped, so that the kernel does not answer it with a reset
  // that could destroy the answer before the client reads it (nginx's lingering close).
  bool lingering = false;
};

namespace {
// What cpp-httplib gets as its task queue (and deletes when its accept loop ends). An accepted
// socket only joins the reader's epoll set, so it is handled on the accept thread itself.
class Inline final : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};
}  // namespace

FrontDoor::FrontDoor(FrontDoorSettings settings) : settings_(settings), pool_(settings.pool) {
  new_task_queue = [] { return new Inline(); };
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second daemon on the
  // same address starts and takes half the traffic.
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  reader_ = std::thread([this] { read_loop(); });
}

FrontDoor::~FrontDoor() {
  shutdown();
  ::close(epoll_fd_);
  ::close(wake_fd_);
}

int FrontDoor::bind(const std::string& host, int port) {
  bool bound = port == 0 ? (port = bind_to_any_port(host)) > 0 : bind_to_port(host, port);
  // listen(2) again on a listening socket resizes its backlog.
  if (!bound || ::listen(svr_sock_, 4096) != 0) return -1;
  return port;
}

RequestContext& FrontDoor::context(const httplib::Request& /*req*/) {
  // The request this thread is serving: cpp-httplib calls handlers on the thread that called
  // process_request, and also for requests it refused before any hook of ours ran.
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = serving_.find(std::this_thread::get_id());
  if (it != serving_.end()) return it->second->ctx;
  thread_local RequestContext scratch;  // not a request of ours (cannot happen for our routes)
  scratch = RequestContext{};
  return scratch;
}

std::size_t FrontDoor::idle_connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_.size();
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
    // Beyond max_connections the accept loop waits for one to close (never for a worker: the
    // reader and the idle timeout close connections on their own), and the kernel's backlog
    // holds the rest.
    std::unique_lock<std::mutex> lock(accept_mutex_);
    while (connections_ >= settings_.max_connections && is_running()) {
      accept_room_.wait_for(lock, milliseconds(100));
    }
    ++connections_;
  }
  watch(std::make_unique<Connection>(sock, *this));
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
    c.request_end = c.in.size();
    return Progress::kReady;
  }
}

// Serves requests on `connection` while whole ones are in memory, then gives it back to the reader.
void FrontDoor::serve(std::unique_ptr<Connection> connection) {
  Connection& c = *connection;
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
    Progress p = advance(c);
    // A client that sends its next request at once keeps this thread, skipping the reader.
    if (p == Progress::kNeedMore && !c.has_pending() && wait_for(c.fd, POLLIN, settings_.park_after)) p = advance(c);
    if (p == Progress::kClosed) return;
    if (p == Progress::kNeedMore) {
      watch(std::move(connection));
      return;
    }
    if (pool_.depth() > 0) {
      // Others wait for a thread: this connection goes to the back of the line, so a busy
      // client cannot keep a thread to itself.
      dispatch(std::move(connection));
      return;
    }
  }
}

FrontDoor::After FrontDoor::serve_one(Connection& c) {
  ++c.requests;
  const bool last = c.requests >= settings_.max_requests_per_connection;
  bool closed = false;
  bool parsed = false;
  c.ctx.client_ip = c.remote_ip;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    serving_[std::this_thread::get_id()] = &c;
  }
  hide_range(std::string_view(c.in.data(), c.request_end), c.in.data());
  bool ok = process_request(c, last, closed, [&](httplib::Request& req) {
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
    // The reader already told the client to go on: cpp-httplib must not say it again.
    if (c.continue_sent) req.headers.erase("Expect");
    if (hook_) hook_(req, c.ctx);
    parsed = true;
  });
  {
    std::lock_guard<std::mutex> lock(mutex_);
    serving_.erase(std::this_thread::get_id());
  }
  // cpp-httplib refused the head itself: nothing after it can be trusted.
  const bool linger = c.ctx.close_after || !parsed;
  c.consume();
  release_body(c);
  c.continue_sent = false;
  c.ctx.reset();  // the flags the reader sets for the next request come after this
  if (!c.flush() || !ok) return After::kClose;
  // A body left unread is drained before closing even when the client asked to close (as
  // cpp-httplib's client does by default): closing at once would reset the connection under a
  // client still sending, and it would never read the answer.
  if (linger) return After::kLinger;
  return closed || last ? After::kClose : After::kNext;
}

void FrontDoor::watch(std::unique_ptr<Connection> connection) {
  std::lock_guard<std::mutex> lock(mutex_);
  Connection& c = *connection;
  if (reader_stop_) return;  // closed
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.fd = c.fd;
  if (::epoll_ctl(epoll_fd_, c.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c.fd, &ev) != 0) return;  // closed
  c.registered = true;
  waiting_.emplace(c.fd, std::move(connection));
}

void FrontDoor::dispatch(std::unique_ptr<Connection> connection) {
  // std::function must be copyable; whoever drops the last copy closes the connection.
  auto held = std::make_shared<std::unique_ptr<Connection>>(std::move(connection));
  pool_.submit([this, held] { serve(std::move(*held)); });
}

// The reader thread: reads every waiting connection as its bytes arrive and hands whole requests
// to the pool; drains lingering closes; enforces the idle and read timeouts.
void FrontDoor::read_loop() {
  std::vector<epoll_event> events(512);
  std::vector<char> sink(64 * 1024);
  auto last_sweep = SteadyClock::now();
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                         static_cast<int>(kSweepEvery.count()));
    std::vector<std::unique_ptr<Connection>> ready;
    bool quit = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (int i = 0; i < n; ++i) {
        auto it = waiting_.find(events[i].data.fd);
        if (it == waiting_.end()) continue;  // the wake-up eventfd
        ready.push_back(std::move(it->second));
        waiting_.erase(it);
      }
      quit = reader_stop_;
    }
    for (auto& connection : ready) {
      Connection& c = *connection;
      if (c.lingering) {
        ssize_t got;
        while ((got = ::recv(c.fd, sink.data(), sink.size(), MSG_DONTWAIT)) > 0) c.last_byte = SteadyClock::now();
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) watch(std::move(connection));
        continue;  // otherwise: the client closed; so do we
      }
      switch (advance(c)) {
        case Progress::kReady: dispatch(std::move(connection)); break;
        case Progress::kNeedMore: watch(std::move(connection)); break;
        case Progress::kClosed: break;
      }
    }
    if (quit) break;
    auto now = SteadyClock::now();
    if (now - last_sweep >= kSweepEvery) {
      last_sweep = now;
      sweep(now);
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  waiting_.clear();  // lingering closes left at exit
}

void FrontDoor::sweep(SteadyClock::time_point now) {
  // After a load, give what the allocator holds free back to the kernel (glibc keeps freed memory
  // in its per-thread arenas): once idle for a second, and again when idle threads have retired.
  const std::size_t threads = pool_.threads();
  if (pool_.busy() == 0 && pool_.depth() == 0) {
    if (busy_since_trim_ || threads != threads_at_trim_) {
      if (now - idle_since_ >= std::chrono::seconds(1)) {
        ::malloc_trim(0);
        busy_since_trim_ = false;
        threads_at_trim_ = threads;
      }
    }
  } else {
    busy_since_trim_ = true;
    idle_since_ = now;
  }
  std::vector<std::unique_ptr<Connection>> late;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      const Connection& c = *it->second;
      bool expired;
      if (c.lingering) {
        expired = now - c.first_byte > settings_.linger_time || now - c.last_byte > settings_.read_timeout;
      } else if (c.in.empty()) {
        expired = now - c.idle_since > settings_.idle_timeout;
      } else {
        expired = now - c.first_byte > settings_.request_read_deadline || now - c.last_byte > settings_.read_timeout;
      }
      if (expired) {
        late.push_back(std::move(it->second));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& connection : late) {
    // A request begun and not finished in time is answered 400 (and audited); the rest close.
    if (!connection->lingering && !connection->in.empty()) {
      connection->ctx.incomplete = true;
      connection->request_end = connection->in.size();
      dispatch(std::move(connection));
    }
  }
}

bool FrontDoor::shutdown(milliseconds grace) {
  if (!reader_.joinable()) return true;  // done before
  stop();
  // Until the requests in progress are done, a request that arrives on an open connection is
  // still read and answered (handlers say 503 while draining, and close); then all close.
  const bool idle = pool_.wait_until_idle(grace);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reader_stop_ = true;
  }
  std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  reader_.join();
  if (idle) pool_.shutdown();
  return idle;
}

}  // namespace mailrelay
