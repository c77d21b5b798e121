#include "test_helpers.h"

#include <sys/mount.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace fakes {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/mailrelay-test-XXXXXX";
  if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

SmallDisk::SmallDisk(const std::string& size) {
  mounted_ = ::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
}

SmallDisk::~SmallDisk() {
  if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

TestCertificates make_test_certificates(const TempDir& dir) {
  TestCertificates out{dir.file("ca.pem"), dir.file("server.pem"), dir.file("server.key")};
  write_file(dir.file("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n");
  std::string q = "'";
  std::string cmd =
      "cd " + q + dir.path() + q + " && "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem "
      "-days 2 -subj /CN=mailrelay-test-ca >/dev/null 2>&1 && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr "
      "-subj /CN=127.0.0.1 >/dev/null 2>&1 && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
      "-extfile ext.cnf >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl could not make test certificates");
  return out;
}

void wait_until_running(const httplib::Server& server) {
  for (int i = 0; i < 5000 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

nlohmann::json sample_request() {
  return nlohmann::json::parse(R"({
    "from": "Billing <billing@example.com>",
    "to": ["alice@example.org", {"email": "bob@example.org", "name": "Bob"}],
    "subject": "Your invoice",
    "text": "plain body",
    "html": "<p>html body</p>"
  })");
}

}  // namespace fakes

namespace fakes {

RawClient::RawClient(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval five{5, 0};  // a send the server never reads fails instead of hanging the test
  if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &five, sizeof(five));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RawClient::~RawClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawClient::send(const std::string& bytes) {
  std::size_t sent = 0;
  while (fd_ >= 0 && sent < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return fd_ >= 0;
}

std::string RawClient::read_until_closed(std::chrono::milliseconds timeout, bool* closed) {
  std::string out;
  std::swap(out, pending_);
  auto end = std::chrono::steady_clock::now() + timeout;
  if (closed) *closed = false;
  char buf[16384];
  while (fd_ >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    pollfd p{fd_, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {  // EOF, or a reset after the server closed with unread bytes
      if (closed) *closed = true;
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string RawClient::read_until(const std::string& marker, std::chrono::milliseconds timeout) {
  std::string out;
  std::swap(out, pending_);
  auto end = std::chrono::steady_clock::now() + timeout;
  char buf[16384];
  while (fd_ >= 0 && out.find(marker) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
    pollfd p{fd_, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  std::size_t at = out.find(marker);
  if (at != std::string::npos) {
    pending_ = out.substr(at + marker.size());
    out.resize(at + marker.size());
  }
  return out;
}

int count_responses(const std::string& bytes) {
  int n = 0;
  for (std::size_t at = 0; (at = bytes.find("HTTP/1.1 ", at)) != std::string::npos; at += 9) {
    if (at == 0 || bytes.compare(at - 2, 2, "\r\n") == 0 || bytes[at - 1] == '}') ++n;
  }
  return n;
}

nlohmann::json full_request() {
  nlohmann::json j = sample_request();
  j["to"][1] = {{"email", "bob@example.org"}, {"name", "Doe, Bob"}};
  j["cc"] = {"carol@example.org"};
  j["bcc"] = {"dave@example.org"};
  j["reply_to"] = "support@example.com";
  j["headers"] = {{"X-Campaign", "nov"}};
  j["attachments"] = {{{"filename", "a.pdf"}, {"content_type", "application/pdf"}, {"content", "JVBERi0x"}}};
  j["tags"] = {"invoice"};
  j["metadata"] = {{"invoice_id", "42"}};
  return j;
}

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

}  // namespace fakes
