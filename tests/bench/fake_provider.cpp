// bench_fake_provider: SendGrid and Mailgun stand-ins for the benchmark, event-driven (one
// thread, epoll) so that they are never the bottleneck. Speaks the real wire formats' happy
// paths: SendGrid POST /v3/mail/send -> 202 + X-Message-Id; Mailgun POST /v3/<domain>/messages
// -> 200 {"id","message"} (no Expect: 100-continue: the relay's transport, nginx and wrk never
// send it). Every answer is held back --latency-ms; --sendgrid-status 503 makes SendGrid an
// outage, 400 makes it refuse every message (the relay fails over, the breaker stays closed).
// --outage-at-ms A --outage-ms D: SendGrid answers 503 to what arrives in [A, A+D) ms after start
// (a blip); at exit it prints "outage recovered_after_ms=N": from the end of the blip to the first
// message SendGrid accepted again (-1: none).
// Loopback only. Prints "ready sendgrid=PORT mailgun=PORT", then serves until SIGTERM/SIGINT;
// on SIGUSR1 it prints "stats connections=N requests=M" (accepted, answered) and goes on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>

#include "message.h"

namespace {

using Clock = std::chrono::steady_clock;

enum class Kind { kSendGrid, kMailgun };

struct Conn {
  Kind kind;
  std::string in, out;
  bool waiting = false;  // an answer is held back; the next request waits for it
  bool close_after = false;
  unsigned long generation = 0;
};

struct Held {
  Clock::time_point due;
  int fd;
  unsigned long generation;
  std::string answer;
};

int listen_on(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 4096) != 0) {
    std::perror("bench_fake_provider: listen");
    std::exit(1);
  }
  return fd;
}

int port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

std::string answer(Kind kind, int sendgrid_status, unsigned long n, bool close) {
  std::string connection = close ? "Connection: close\r\n" : "";
  if (kind == Kind::kSendGrid) {
    if (sendgrid_status != 202) {
      std::string body = "{\"errors\":[{\"message\":\"bench: refused by configuration\",\"field\":null,\"help\":null}]}";
      return "HTTP/1.1 " + std::to_string(sendgrid_status) + " Bench\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n" + connection + "\r\n" + body;
    }
    return "HTTP/1.1 202 Accepted\r\nX-Message-Id: bench-sg-" + std::to_string(n) + "\r\nContent-Length: 0\r\n" +
           connection + "\r\n";
  }
  std::string body = "{\"id\":\"<bench-" + std::to_string(n) + "@mg.example.com>\",\"message\":\"Queued. Thank you.\"}";
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + connection + "\r\n" + body;
}

}  // namespace

int main(int argc, char** argv) {
  long outage_at_ms = -1, outage_ms = 0;
  int sendgrid_port = 0, mailgun_port = 0, latency_ms = 0;
  int sendgrid_status = 202;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (a == "--sendgrid-port") sendgrid_port = next();
    else if (a == "--mailgun-port") mailgun_port = next();
    else if (a == "--latency-ms") latency_ms = next();
    else if (a == "--sendgrid-status") sendgrid_status = next();
    else if (a == "--outage-at-ms") outage_at_ms = next();
    else if (a == "--outage-ms") outage_ms = next();
    else {
      std::fprintf(stderr, "usage: %s [--sendgrid-port N] [--mailgun-port N] [--latency-ms N] [--sendgrid-status 202|400|503]\n", argv[0]);
      return 2;
    }
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGUSR1);  // prints "stats connections=N requests=M" (accepted and answered so far)
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int sig_fd = ::signalfd(-1, &mask, SFD_CLOEXEC);

  int sg = listen_on(sendgrid_port), mg = listen_on(mailgun_port);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  for (int fd : {sg, mg, sig_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  std::printf("ready sendgrid=%d mailgun=%d\n", port_of(sg), port_of(mg));
  std::fflush(stdout);

  std::unordered_map<int, Conn> conns;
  std::deque<Held> held;  // one latency for all, so due times are in order
  unsigned long served = 0, generation = 0;
  const auto latency = std::chrono::milliseconds(latency_ms);
  const auto started = Clock::now();
  const auto outage_begin = started + std::chrono::milliseconds(outage_at_ms);
  const auto outage_end = outage_begin + std::chrono::milliseconds(outage_ms);
  long recovered_after_ms = -1;
  // SendGrid's status for a request arriving now.
  auto sendgrid_now = [&](Kind kind) {
    if (kind != Kind::kSendGrid || outage_at_ms < 0) return sendgrid_status;
    auto now = Clock::now();
    if (now >= outage_begin && now < outage_end) return 503;
    if (now >= outage_end && recovered_after_ms < 0 && sendgrid_status == 202) {
      recovered_after_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - outage_end).count();
    }
    return sendgrid_status;
  };

  auto close_conn = [&](int fd) {
    ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(fd);
  };
  // Writes what is pending; false when the connection is gone.
  auto flush = [&](int fd, Conn& c) {
    while (!c.out.empty()) {
      ssize_t n = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.fd = fd;
        ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        return true;
      }
      if (n <= 0) return false;
      c.out.erase(0, static_cast<std::size_t>(n));
    }
    return !c.close_after;
  };
  // Handles the requests complete in the input buffer, one at a time.
  auto process = [&](int fd, Conn& c) {
    while (!c.waiting) {
      bool close = false;
      std::size_t n = bench::complete_message(c.in, close);
      if (n == 0) return true;
      c.in.erase(0, n);
      std::string a = answer(c.kind, sendgrid_now(c.kind), ++served, close);
      if (latency.count() == 0) {
        c.out += a;
        c.close_after = close;
        if (!flush(fd, c)) return false;
      } else {
        c.waiting = true;
        c.close_after = close;
        held.push_back({Clock::now() + latency, fd, c.generation, std::move(a)});
      }
    }
    return true;
  };

  epoll_event events[512];
  for (;;) {
    int timeout = -1;
    if (!held.empty()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(held.front().due - Clock::now()).count();
      timeout = static_cast<int>(std::max<long long>(0, left));
    }
    int n = ::epoll_wait(ep, events, 512, timeout);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == sig_fd) {
        signalfd_siginfo info{};
        if (::read(sig_fd, &info, sizeof(info)) == sizeof(info) && info.ssi_signo == SIGUSR1) {
          std::printf("stats connections=%lu requests=%lu\n", generation, served);
          std::fflush(stdout);
          continue;
        }
        if (outage_at_ms >= 0) std::printf("outage recovered_after_ms=%ld\n", recovered_after_ms);
        return 0;
      }
      if (fd == sg || fd == mg) {
        for (int c; (c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = c;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
          Conn& conn = conns[c];
          conn = Conn{};
          conn.kind = fd == sg ? Kind::kSendGrid : Kind::kMailgun;
          conn.generation = ++generation;
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = it->second;
      bool alive = true;
      if (events[i].events & EPOLLOUT) {
        alive = flush(fd, c);
        if (alive && c.out.empty()) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = fd;
          ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
      }
      if (alive && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        char buf[65536];
        ssize_t r;
        while ((r = ::recv(fd, buf, sizeof(buf), 0)) > 0) c.in.append(buf, static_cast<std::size_t>(r));
        alive = !(r == 0 || (r < 0 && errno != EAGAIN)) && process(fd, c);
      }
      if (!alive) close_conn(fd);
    }
    auto now = Clock::now();
    while (!held.empty() && held.front().due <= now) {
      Held h = std::move(held.front());
      held.pop_front();
      auto it = conns.find(h.fd);
      if (it == conns.end() || it->second.generation != h.generation) continue;  // client left
      Conn& c = it->second;
      c.waiting = false;
      c.out += h.answer;
      if (!flush(h.fd, c) || !process(h.fd, c)) close_conn(h.fd);
    }
  }
}
