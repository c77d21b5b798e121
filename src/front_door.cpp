#include "front_door.h"

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

namespace mailrelay {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kMaxHead = 64 * 1024;
constexpr std::size_t kReadBuffer = 16 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr std::size_t kLingerBytes = 1024 * 1024;

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

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// The header lines of a raw request head, values trimmed of optional whitespace and otherwise
// untouched. False for anything RFC 9112 does not allow (obs-fold, a bad field name).
bool parse_raw_headers(const std::string& head, httplib::Headers& out) {
  std::size_t pos = head.find("\r\n");
  if (pos == std::string::npos) return false;
  pos += 2;
  while (pos < head.size()) {
    std::size_t end = head.find("\r\n", pos);
    if (end == std::string::npos) return false;
    if (end == pos) return true;  // the blank line ending the head
    std::size_t colon = head.find(':', pos);
    if (colon == std::string::npos || colon > end || colon == pos) return false;
    for (std::size_t i = pos; i < colon; ++i) {
      if (!is_token_char(head[i])) return false;
    }
    std::size_t value = colon + 1;
    std::size_t value_end = end;
    while (value < value_end && (head[value] == ' ' || head[value] == '\t')) ++value;
    while (value_end > value && (head[value_end - 1] == ' ' || head[value_end - 1] == '\t')) --value_end;
    out.emplace(head.substr(pos, colon - pos), head.substr(value, value_end - value));
    pos = end + 2;
  }
  return false;
}

}  // namespace

// A client connection with its buffers. It moves between a worker (one request at a time) and
// the idle set; whoever holds the unique_ptr owns the socket.
struct FrontDoor::Connection final : public httplib::Stream {
  Connection(int socket, const FrontDoorSettings& settings) : fd(socket), settings(settings) {
    int one = 1;  // answers are small: Nagle + delayed ACK would add 40 ms each
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    address_of(fd, true, remote_ip, remote_port);
    address_of(fd, false, local_ip, local_port);
  }
  ~Connection() override {
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
  }

  void begin_request() {
    head.clear();
    recording = true;
    malformed = false;
    close_after = false;
    deadline = Clock::now() + settings.request_read_deadline;
  }
  bool has_buffered() const { return in_begin < in_end; }
  // An idle connection keeps only its socket: ten thousand of them cost no more than a few MiB.
  // (The read buffer is the serving thread's: a connection is parked only with nothing unread.)
  void release_buffers() {
    in = nullptr;
    in_begin = in_end = 0;
    if (head.capacity() > 4096) head = std::string();
    if (out.capacity() > 4096) out = std::string();
  }

  bool is_readable() const override {
    return has_buffered() || wait_for(fd, POLLIN, settings.read_timeout);
  }
  bool is_writable() const override { return wait_for(fd, POLLOUT, settings.write_timeout); }

  ssize_t read(char* ptr, size_t size) override {
    if (!has_buffered()) {
      // The client may wait for what we wrote (100 Continue) before it sends more.
      if (!flush()) return -1;
      // Usually the bytes are there already: poll only when they are not.
      ssize_t n = ::recv(fd, in, kReadBuffer, MSG_DONTWAIT);
      while (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        if (!wait_for(fd, POLLIN, std::min(left, settings.read_timeout))) return -1;
        n = ::recv(fd, in, kReadBuffer, MSG_DONTWAIT);
      }
      if (n <= 0) return n;
      in_begin = 0;
      in_end = static_cast<std::size_t>(n);
    }
    std::size_t n = std::min(size, in_end - in_begin);
    std::memcpy(ptr, in + in_begin, n);
    in_begin += n;
    if (recording) record(ptr, n);
    return static_cast<ssize_t>(n);
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
      if (!wait_for(fd, POLLOUT, settings.write_timeout)) return false;
      ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    out.clear();
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

  // Keeps the request line and headers as they arrive (cpp-httplib reads them a byte at a time).
  void record(const char* data, std::size_t n) {
    head.append(data, n);
    std::size_t from = head.size() >= n + 3 ? head.size() - n - 3 : 0;
    if (head.find("\r\n\r\n", from) != std::string::npos) {
      recording = false;
    } else if (head.size() > kMaxHead) {
      recording = false;
      malformed = true;
    }
  }

  const int fd;
  const FrontDoorSettings& settings;
  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;
  char* in = nullptr;  // kReadBuffer bytes, lent by the thread serving the connection
  std::size_t in_begin = 0, in_end = 0;
  std::string out;
  std::string head;
  bool recording = false;
  bool malformed = false;
  bool close_after = false;
  Clock::time_point deadline;
  std::size_t requests = 0;
  Clock::time_point idle_since;
  // Closing: our answer is sent and our side shut down; what the client still sends (the rest
  // of a refused body) is read and dropped so that the kernel does not answer it with a reset
  // that could destroy the answer before the client reads it (nginx's lingering close).
  bool lingering = false;
  std::size_t discarded = 0;
};

namespace {
thread_local FrontDoor::Connection* tl_connection = nullptr;
}  // namespace

bool FrontDoor::request_head_malformed() { return tl_connection && tl_connection->malformed; }

void FrontDoor::close_connection(httplib::Response& res) {
  res.set_header("Connection", "close");
  if (tl_connection) tl_connection->close_after = true;
}

namespace {
// What cpp-httplib gets as its task queue, and deletes when its accept loop ends: a handle on
// our pool, which must live on while requests in progress drain.
class PoolHandle final : public httplib::TaskQueue {
 public:
  explicit PoolHandle(WorkerPool& pool) : pool_(pool) {}
  void enqueue(std::function<void()> fn) override { pool_.enqueue(std::move(fn)); }
  void shutdown() override {}

 private:
  WorkerPool& pool_;
};
}  // namespace

FrontDoor::FrontDoor(FrontDoorSettings settings)
    : settings_(settings), pool_(std::make_unique<WorkerPool>(settings.threads, settings.max_queue)) {
  new_task_queue = [this] { return new PoolHandle(*pool_); };
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  watcher_ = std::thread([this] { watch_idle(); });
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

void FrontDoor::shutdown() {
  if (!watcher_.joinable()) return;  // done before
  stop();
  pool_->wait_until_idle();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  watcher_.join();
  pool_->shutdown();
}

std::size_t FrontDoor::queue_depth() const { return pool_->depth(); }

std::size_t FrontDoor::idle_connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return idle_.size();
}

// Called by cpp-httplib on a worker for each accepted socket.
bool FrontDoor::process_and_close_socket(socket_t sock) {
  serve_connection(std::make_unique<Connection>(sock, settings_));
  return true;
}

// Serves requests on `connection` while the client has one ready, then parks it.
void FrontDoor::serve_connection(std::unique_ptr<Connection> connection) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBuffer]);
  Connection& c = *connection;
  c.in = buffer.get();
  for (int served = 0;; ++served) {
    if (served > 0 && pool_->depth() > 0) {
      // Others wait for a worker: this connection goes to the back of the line (or parks), so
      // a busy client cannot keep a worker to itself while the queue grows.
      if (c.has_buffered() || wait_for(c.fd, POLLIN, milliseconds(0))) {
        dispatch(std::move(connection));
      } else {
        park(std::move(connection));
      }
      return;
    }
    // Shedding threads must be quick: they do not wait for a client's next request.
    auto wait = WorkerPool::shedding() ? milliseconds(0) : settings_.park_after;
    if (!c.has_buffered() && !wait_for(c.fd, POLLIN, wait)) {
      park(std::move(connection));
      return;
    }
    c.begin_request();
    ++c.requests;
    bool last = c.requests >= settings_.max_requests_per_connection;
    bool closed = false;
    tl_connection = &c;
    bool ok = process_request(c, last, closed, [&c](httplib::Request& req) {
      // Headers as sent: 0.11.4 percent-decodes values ("%0D%0A" becomes a CRLF, and a
      // bearer token with a "%" in it stops matching). Its own REMOTE_ADDR/REMOTE_PORT/LOCAL_*
      // entries go too: they can be shadowed by a client header of the same name, and the
      // addresses are in req.remote_addr. Range is ignored: nothing here is a range resource.
      httplib::Headers raw;
      if (!c.malformed && !c.recording && parse_raw_headers(c.head, raw)) {
        req.headers = std::move(raw);
      } else {
        c.malformed = true;
      }
      req.ranges.clear();
    });
    tl_connection = nullptr;
    if (!c.flush() || !ok || closed || last) return;  // the destructor closes
    if (c.close_after) {
      ::shutdown(c.fd, SHUT_WR);
      c.lingering = true;
      c.idle_since = Clock::now();
      park(std::move(connection));
      return;
    }
  }
}

void FrontDoor::park(std::unique_ptr<Connection> connection) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || idle_.size() >= settings_.max_idle) return;  // closed
  if (!connection->lingering) connection->idle_since = Clock::now();
  connection->release_buffers();
  int fd = connection->fd;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return;
  idle_.emplace(fd, std::move(connection));
}

void FrontDoor::dispatch(std::unique_ptr<Connection> connection) {
  // std::function must be copyable; whoever drops the last copy closes the connection.
  auto held = std::make_shared<std::unique_ptr<Connection>>(std::move(connection));
  pool_->enqueue([this, held] { serve_connection(std::move(*held)); });
}

// The idle set's thread: hands connections with a new request to the pool, closes those idle
// beyond the timeout. On shutdown, requests that already arrived are still served.
void FrontDoor::watch_idle() {
  std::vector<epoll_event> events(256);
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 1000);
    std::vector<std::unique_ptr<Connection>> ready, drain;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping = stopping_;
      for (int i = 0; i < n; ++i) {
        auto it = idle_.find(events[i].data.fd);
        if (it == idle_.end()) continue;  // the wake-up eventfd
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
        (it->second->lingering ? drain : ready).push_back(std::move(it->second));
        idle_.erase(it);
      }
      auto now = Clock::now();
      for (auto it = idle_.begin(); it != idle_.end();) {
        const Connection& c = *it->second;
        if (stopping || now - c.idle_since > (c.lingering ? kLingerTime : settings_.idle_timeout)) {
          ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
          // A request that arrived just before shutdown is answered (503 while draining).
          if (stopping && !c.lingering && wait_for(it->first, POLLIN, milliseconds(0))) {
            ready.push_back(std::move(it->second));
          }
          it = idle_.erase(it);  // otherwise closed here
        } else {
          ++it;
        }
      }
    }
    // Outside the lock: enqueue may wait for room in the pool, and workers park under it.
    for (auto& connection : ready) dispatch(std::move(connection));
    for (auto& connection : drain) {
      char sink[16384];
      ssize_t n;
      while ((n = ::recv(connection->fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0) {
        connection->discarded += static_cast<std::size_t>(n);
      }
      bool more = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && connection->discarded < kLingerBytes;
      if (more) park(std::move(connection));  // keeps its first idle_since: lingering is bounded
    }
    if (stopping) return;
  }
}

}  // namespace mailrelay
