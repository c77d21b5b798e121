#include "raw_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace fakes {

RawServer::RawServer(Mode mode) : mode_(mode) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener_, 16) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("RawServer: cannot listen on loopback");
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

RawServer::~RawServer() {
  stop_ = true;
  thread_.join();
  ::close(listener_);
}

void RawServer::serve() {
  std::vector<std::thread> connections;
  while (!stop_) {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    connections.emplace_back([this, fd] { handle(fd); });
  }
  for (auto& t : connections) t.join();
}

// Reads one request: headers, then Content-Length bytes of body; bounded by time and size.
bool RawServer::read_request(int fd) {
  std::string data;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::size_t need = std::string::npos;
  while (!stop_ && std::chrono::steady_clock::now() < until && data.size() < (1 << 22)) {
    if (need == std::string::npos) {
      auto end = data.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::size_t length = 0;
        auto cl = data.find("Content-Length: ");
        if (cl != std::string::npos && cl < end) length = std::stoul(data.substr(cl + 16));
        need = end + 4 + length;
      }
    }
    if (need != std::string::npos && data.size() >= need) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[8192];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  bool complete = need != std::string::npos && data.size() >= need;
  if (complete) ++requests_;
  return complete;
}

void RawServer::handle(int fd) {
  bool complete = read_request(fd);
  if (mode_ == Mode::kDropSecond && complete) {
    const char ok[] = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Message-Id: raw-1\r\n\r\n";
    (void)::send(fd, ok, sizeof ok - 1, MSG_NOSIGNAL);
    read_request(fd);  // the second request on this connection: read, then dropped below
  }
  switch (mode_) {
    case Mode::kReset: {
      linger l{1, 0};  // close with RST instead of FIN
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      break;
    }
    case Mode::kCloseWithoutAnswer:
    case Mode::kDropSecond:
      break;
    case Mode::kGarbage: {
      const char garbage[] = "this is not HTTP at all\r\n\r\n";
      (void)::send(fd, garbage, sizeof garbage - 1, MSG_NOSIGNAL);
      break;
    }
    case Mode::kHang:
      for (int i = 0; i < 600 && !stop_; ++i) ::usleep(50 * 1000);  // at most 30 s
      break;
  }
  ::close(fd);
}

}  // namespace fakes
