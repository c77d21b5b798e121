// Helpers shared by the tests: temporary directories, files, a test CA, sample requests.
#pragma once

#include <chrono>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace fakes {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A tmpfs of `size` (e.g. "64k") mounted on a fresh directory, for a disk that fills up; unmounted
// on destruction. mounted() is false where mounting is not allowed (not root).
class SmallDisk {
 public:
  explicit SmallDisk(const std::string& size);
  ~SmallDisk();
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  bool mounted() const { return mounted_; }
  std::string file(const std::string& name) const { return dir_.file(name); }

 private:
  TempDir dir_;
  bool mounted_ = false;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content);

// A throwaway CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
struct TestCertificates {
  std::string ca, cert, key;
};
TestCertificates make_test_certificates(const TempDir& dir);

// Waits (at most 5 s) until a server started on another thread accepts connections.
void wait_until_running(const httplib::Server& server);

// Threads of this process now (/proc/self/task).
std::size_t thread_count();

// A blocking TCP client on 127.0.0.1 for the bytes no HTTP library would send (smuggling,
// stalled heads, idle connections). Closes on destruction.
class RawClient {
 public:
  explicit RawClient(int port);
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  bool connected() const { return fd_ >= 0; }
  // False once the peer has closed (errors are not fatal: the server may close mid-send).
  bool send(const std::string& bytes);
  // Reads until the peer closes or `timeout` passes; `closed` tells which.
  std::string read_until_closed(std::chrono::milliseconds timeout, bool* closed = nullptr);
  // Reads until `marker` has arrived (or the peer closes, or `timeout` passes).
  std::string read_until(const std::string& marker, std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  std::string pending_;
};

// How many HTTP responses `bytes` holds (status lines).
int count_responses(const std::string& bytes);

// A valid /v1/send body to start from.
nlohmann::json sample_request();
// sample_request() with every field the golden payload tests check: a display name with a comma,
// cc, bcc, reply_to, a header, a PDF attachment, one tag and one metadata entry.
nlohmann::json full_request();

}  // namespace fakes
