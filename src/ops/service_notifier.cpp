#include "service_notifier.h"

#include <signal.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

namespace mailrelay {

// unset_environment=0: the watchdog thread keeps using NOTIFY_SOCKET after start-up.
void ServiceNotifier::ready(const std::string& status) const {
  sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%lu", status.c_str(), static_cast<unsigned long>(getpid()));
}

void ServiceNotifier::reloading() const { sd_notify(0, "RELOADING=1\nSTATUS=reloading configuration"); }

void ServiceNotifier::stopping(const std::string& status) const {
  sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status.c_str());
}

void ServiceNotifier::watchdog() const { sd_notify(0, "WATCHDOG=1"); }

std::optional<std::chrono::milliseconds> ServiceNotifier::watchdog_interval() const {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::milliseconds(usec / 2000);
}

namespace {

std::string status_path() {
  const char* dir = std::getenv("RUNTIME_DIRECTORY");
  if (!dir || !*dir) return "";
  std::string first = dir;
  return first.substr(0, first.find(':')) + "/reload-status";  // several directories: the first
}

// The counter of the status file's line, or -1 when there is none.
long read_count(const std::string& path, std::string* line) {
  std::ifstream in(path);
  std::string text;
  if (!std::getline(in, text)) return -1;
  if (line) *line = text;
  char* end = nullptr;
  const long n = std::strtol(text.c_str(), &end, 10);
  return end == text.c_str() ? -1 : n;
}

}  // namespace

ReloadStatusFile::ReloadStatusFile() : path_(status_path()) { write("0 started"); }

void ReloadStatusFile::record(bool ok, const std::string& text) {
  ++count_;
  std::string one_line = text;
  std::replace(one_line.begin(), one_line.end(), '\n', ' ');
  write(std::to_string(count_) + (ok ? " ok" : " failed: " + one_line));
}

void ReloadStatusFile::write(const std::string& line) const {
  if (path_.empty()) return;
  const std::string tmp = path_ + ".new";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << line << "\n";
    if (!out.flush()) return;
  }
  std::rename(tmp.c_str(), path_.c_str());
}

int reload_and_wait(long pid, std::chrono::seconds timeout) {
  const std::string path = status_path();
  const long before = path.empty() ? -1 : read_count(path, nullptr);
  if (before < 0) {
    std::fprintf(stderr,
                 "mailrelayd reload: no reload status to read (%s); this command is the unit's ExecReload. By hand: "
                 "systemctl reload mailrelayd, or kill -HUP the daemon and read its log\n",
                 path.empty() ? "RUNTIME_DIRECTORY is not set" : path.c_str());
    return 2;
  }
  if (pid <= 0 || kill(static_cast<pid_t>(pid), SIGHUP) != 0) {
    std::fprintf(stderr, "mailrelayd reload: cannot signal process %ld\n", pid);
    return 1;
  }
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    std::string line;
    if (read_count(path, &line) > before) {
      const std::string verdict = line.substr(line.find(' ') + 1);
      const bool ok = verdict == "ok";
      std::fprintf(ok ? stdout : stderr, "mailrelayd reload: %s\n",
                   ok ? "configuration reloaded" : ("reload " + verdict + "; the running configuration stays").c_str());
      return ok ? 0 : 1;
    }
    if (kill(static_cast<pid_t>(pid), 0) != 0) {
      std::fprintf(stderr, "mailrelayd reload: process %ld ended before it answered\n", pid);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::fprintf(stderr, "mailrelayd reload: no answer from process %ld within %lld s\n", pid,
               static_cast<long long>(timeout.count()));
  return 1;
}

}  // namespace mailrelay
