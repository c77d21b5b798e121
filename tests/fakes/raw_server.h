// RawServer: a TCP server on 127.0.0.1:0 that reads one HTTP request per connection and then
// misbehaves on purpose (reset, close without answering, answer garbage, or hang), for the
// transport faults an HTTP library cannot produce. Thread-safe; stops on destruction.
#pragma once

#include <atomic>
#include <string>
#include <thread>

namespace fakes {

class RawServer {
 public:
  // kDropSecond answers the first request on a connection (202, kept alive), then reads the
  // second request on that connection and closes it without answering.
  enum class Mode { kReset, kCloseWithoutAnswer, kGarbage, kHang, kDropSecond };
  explicit RawServer(Mode mode);
  ~RawServer();
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Complete requests read (headers and the whole body).
  int requests() const { return requests_.load(); }

 private:
  void serve();
  void handle(int fd);
  bool read_request(int fd);

  Mode mode_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace fakes
