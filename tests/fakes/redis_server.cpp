#include "redis_server.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace fakes {
namespace {

// A port the kernel has just handed out and taken back; redis-server binds it next (another
// process could take it first: start() then fails and picks another).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace

RedisServer::RedisServer(std::vector<std::string> extra) : extra_(std::move(extra)) {
  for (int i = 0; i < 5; ++i) {
    port_ = free_port();
    if (start()) return;
  }
  throw std::runtime_error("redis-server did not start (is Debian's redis-server installed?)");
}

RedisServer::~RedisServer() { kill(); }

bool RedisServer::start() {
  std::vector<std::string> args{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                "--dir", dir_.path(), "--save", "", "--appendonly", "no",
                                "--daemonize", "no", "--logfile", dir_.file("redis.log")};
  // Later arguments win: a test asking for persistence gets it.
  args.insert(args.end(), extra_.begin(), extra_.end());
  pid_ = fork();
  if (pid_ == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp("redis-server", argv.data());
    _exit(127);
  }
  // Up when it answers PING; given up after 10 s or when it exited (port taken).
  for (int i = 0; i < 400; ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    if (cli({"PING"}) == "PONG") return true;
    usleep(25 * 1000);
  }
  kill();
  return false;
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::restart() {
  kill();
  if (!start()) throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_));
}

std::string RedisServer::cli(const std::vector<std::string>& args) const {
  std::string command = "redis-cli -h 127.0.0.1 -p " + std::to_string(port_);
  for (const auto& a : extra_) {
    if (a == "--requirepass") command += " --no-auth-warning -a";
    else if (command.size() > 3 && command.compare(command.size() - 3, 3, " -a") == 0) command += " '" + a + "'";
  }
  for (const auto& a : args) command += " '" + a + "'";
  command += " 2>/dev/null";
  std::string out;
  if (FILE* p = popen(command.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace fakes
