// bench_load: a closed-loop HTTP/1.1 load generator (one thread, epoll) that reports latency per
// status code, which wrk cannot: the overload scenario needs the p99 of the 503s alone. Each of
// --connections keeps one POST in flight for --duration seconds; a connection the server closes
// is reopened, and the time to reconnect counts toward that request. Loopback only. Prints one
// JSON object.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "message.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Conn {
  int fd = -1;
  bool connecting = false;
  std::size_t sent = 0;
  std::string in;
  Clock::time_point started;
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, connections = 64;
  double duration = 5;
  std::string path = "/v1/send", body_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--port") port = std::atoi(argv[i + 1]);
    else if (a == "--connections") connections = std::atoi(argv[i + 1]);
    else if (a == "--duration") duration = std::atof(argv[i + 1]);
    else if (a == "--path") path = argv[i + 1];
    else if (a == "--body") body_file = argv[i + 1];
  }
  if (port == 0 || body_file.empty()) {
    std::fprintf(stderr, "usage: %s --port N --body FILE [--connections N] [--duration S] [--path P]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  std::stringstream ss;
  ss << std::ifstream(body_file).rdbuf();
  const std::string body = ss.str();
  const std::string request = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(static_cast<std::size_t>(connections));
  std::map<int, std::vector<double>> latencies;  // by status; 0 = connection error
  long errors = 0;

  auto open = [&](std::size_t i, Clock::time_point started) {
    Conn& c = conns[i];
    c = Conn{};
    c.started = started;
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    c.connecting = r != 0;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  };
  auto drop = [&](std::size_t i) {
    ::epoll_ctl(ep, EPOLL_CTL_DEL, conns[i].fd, nullptr);
    ::close(conns[i].fd);
    conns[i].fd = -1;
  };

  const auto begin = Clock::now();
  const auto end = begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration));
  for (std::size_t i = 0; i < conns.size(); ++i) open(i, Clock::now());
  epoll_event events[1024];
  while (Clock::now() < end) {
    int n = ::epoll_wait(ep, events, 1024, 100);
    for (int k = 0; k < n; ++k) {
      std::size_t i = events[k].data.u64;
      Conn& c = conns[i];
      if (c.fd < 0) continue;
      bool failed = (events[k].events & EPOLLERR) != 0;
      if (!failed && c.sent < request.size() && (events[k].events & EPOLLOUT)) {
        ssize_t w = ::send(c.fd, request.data() + c.sent, request.size() - c.sent, MSG_NOSIGNAL);
        if (w > 0) c.sent += static_cast<std::size_t>(w);
        else if (errno != EAGAIN) failed = true;
        if (c.sent == request.size()) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = i;
          ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        }
      }
      if (!failed && (events[k].events & (EPOLLIN | EPOLLHUP))) {
        char buf[16384];
        ssize_t r;
        while ((r = ::recv(c.fd, buf, sizeof(buf), 0)) > 0) c.in.append(buf, static_cast<std::size_t>(r));
        bool close = false;
        std::size_t size = bench::complete_message(c.in, close);
        if (size > 0) {
          int status = std::atoi(c.in.c_str() + 9);  // "HTTP/1.1 503 ..."
          auto now = Clock::now();
          latencies[status].push_back(std::chrono::duration<double, std::milli>(now - c.started).count());
          c.in.erase(0, size);
          if (close || r == 0) {
            drop(i);
            open(i, now);
          } else {
            c.sent = 0;
            c.started = now;
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLOUT;
            ev.data.u64 = i;
            ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
          }
          continue;
        }
        if (r == 0 || (r < 0 && errno != EAGAIN)) failed = true;
      }
      if (failed) {
        ++errors;
        drop(i);
        open(i, Clock::now());
      }
    }
  }
  double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  long total = 0;
  std::string by_status;
  for (auto& [status, v] : latencies) {
    total += static_cast<long>(v.size());
    char line[200];
    std::snprintf(line, sizeof(line), "%s\"%d\":{\"count\":%zu,\"p50_ms\":%.2f,\"p99_ms\":%.2f}",
                  by_status.empty() ? "" : ",", status, v.size(), percentile(v, 0.5), percentile(v, 0.99));
    by_status += line;
  }
  std::printf("{\"seconds\":%.2f,\"requests\":%ld,\"rps\":%.1f,\"errors\":%ld,\"by_status\":{%s}}\n", seconds, total,
              static_cast<double>(total) / seconds, errors, by_status.c_str());
  for (auto& c : conns) {
    if (c.fd >= 0) ::close(c.fd);
  }
  return 0;
}
