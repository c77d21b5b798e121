// Daemon: one mailrelayd process for end-to-end tests. Its stderr is collected; the port comes
// from its "listening on" line. Killed (bounded wait) if still running at destruction.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

class Daemon {
 public:
  Daemon(std::vector<std::string> args, std::vector<std::string> env = {}) {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // A test killed by ctest's timeout runs no destructor: its daemon goes with it.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(fds[1], 2);
      std::vector<char*> argv{const_cast<char*>(MAILRELAYD_PATH)};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      for (const char* name : {"SENDGRID_API_KEY", "MAILGUN_API_KEY", "CREDENTIALS_DIRECTORY"}) unsetenv(name);
      for (auto& e : env) putenv(e.data());
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    err_fd_ = fds[0];
    reader_ = std::thread([this] {
      char buf[4096];
      ssize_t n;
      while ((n = read(err_fd_, buf, sizeof buf)) > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        stderr_.append(buf, static_cast<std::size_t>(n));
      }
    });
    // Wait (bounded) for the port or for the process to exit.
    for (int i = 0; i < 600 && port_ == 0 && !exited(); ++i) {  // at most 15 s, for loaded machines
      usleep(25 * 1000);
      std::lock_guard<std::mutex> lock(mutex_);
      auto at = stderr_.find("listening on ");
      auto nl = at == std::string::npos ? std::string::npos : stderr_.find(' ', at + 13);
      if (nl != std::string::npos) {
        std::string where = stderr_.substr(at + 13, nl - at - 13);
        port_ = std::stoi(where.substr(where.rfind(':') + 1));
      }
    }
  }
  ~Daemon() {
    if (!exited()) {
      kill(pid_, SIGKILL);
      wait_exit(5000);
    }
    if (reader_.joinable()) reader_.join();
    close(err_fd_);
  }
  int port() const { return port_; }
  std::string err() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stderr_;
  }
  bool exited() {
    if (status_ >= 0) return true;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status_ >= 0;
  }
  // Exit code, or -1 if it did not exit within `ms`. Once it exited, err() holds all it wrote.
  int wait_exit(int ms) {
    for (int i = 0; i < ms / 10 && !exited(); ++i) usleep(10 * 1000);
    if (status_ >= 0 && reader_.joinable()) reader_.join();  // the pipe is at EOF
    return status_;
  }
  int stop() {
    kill(pid_, SIGTERM);
    return wait_exit(15000);
  }
  void signal(int sig) { kill(pid_, sig); }
  pid_t pid() const { return pid_; }
  // Every answer this client receives is recorded for the OpenAPI check (record_answer).
  httplib::Client client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(20, 0);
    c.set_logger(record_answer);
    return c;
  }

  // One line per answer in MAILRELAY_ANSWERS_DIR/answers-<pid>.jsonl: method, path, status,
  // headers that the contract names, and the body when it is JSON. tools/check_answers.py
  // validates them all against docs/openapi.yaml once the e2e tests have run.
  static void record_answer(const httplib::Request& req, const httplib::Response& res) {
    static std::mutex mutex;
    nlohmann::json line{{"method", req.method}, {"path", req.path}, {"status", res.status},
                        {"content_type", res.get_header_value("Content-Type")}, {"headers", nlohmann::json::object()}};
    for (const char* name : {"X-Request-Id", "Retry-After", "WWW-Authenticate", "Allow", "Idempotent-Replayed"}) {
      if (res.has_header(name)) line["headers"][name] = res.get_header_value(name);
    }
    if (line["content_type"] == "application/json" && res.body.size() < 1048576) {
      nlohmann::json body = nlohmann::json::parse(res.body, nullptr, false);  // none for HEAD
      if (!body.is_discarded()) line["body"] = std::move(body);
    }
    std::lock_guard<std::mutex> lock(mutex);
    mkdir(MAILRELAY_ANSWERS_DIR, 0755);
    const std::string path = std::string(MAILRELAY_ANSWERS_DIR) + "/answers-" + std::to_string(getpid()) + ".jsonl";
    if (FILE* f = std::fopen(path.c_str(), "a")) {
      std::fputs((line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n").c_str(), f);
      std::fclose(f);
    }
  }

 private:
  pid_t pid_ = -1;
  int err_fd_ = -1;
  int port_ = 0;
  int status_ = -1;
  std::mutex mutex_;
  std::string stderr_;
  std::thread reader_;
};

inline std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') out.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  return out;
}

