// Helpers shared by the tests: temporary directories, files, a test CA, sample requests.
#pragma once

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

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content);

// A throwaway CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
struct TestCertificates {
  std::string ca, cert, key;
};
TestCertificates make_test_certificates(const TempDir& dir);

// Waits (at most 5 s) until a server started on another thread accepts connections.
void wait_until_running(const httplib::Server& server);

// A valid /v1/send body to start from.
nlohmann::json sample_request();

}  // namespace fakes
