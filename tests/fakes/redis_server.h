// RedisServer: a real redis-server (Debian's) for the tests, on a free loopback port, with no
// persistence unless asked and no system service involved. Started in the constructor (bounded
// wait for PING), stopped by its PID in the destructor. kill() and restart() for outage tests.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "test_helpers.h"

namespace fakes {

class RedisServer {
 public:
  // `extra`: more redis-server arguments (--requirepass secret, --appendonly yes ...).
  explicit RedisServer(std::vector<std::string> extra = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  // SIGKILL, waited for: the store vanishes mid-operation.
  void kill();
  // Starts again on the same port and directory (what it persisted, it has again).
  void restart();
  // Runs redis-cli against it; its standard output, trimmed.
  std::string cli(const std::vector<std::string>& args) const;
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  bool start();
  TempDir dir_;
  std::vector<std::string> extra_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace fakes
