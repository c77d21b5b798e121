// ServiceNotifier: tells systemd (sd_notify) about start-up, reloads, shutdown and liveness.
// Does nothing when not started by systemd (no NOTIFY_SOCKET). Thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace mailrelay {

class ServiceNotifier {
 public:
  void ready(const std::string& status) const;
  void reloading() const;
  void stopping(const std::string& status) const;
  void watchdog() const;
  // Half of WATCHDOG_USEC when systemd expects pings from this process, else nullopt.
  std::optional<std::chrono::milliseconds> watchdog_interval() const;
};

// The verdict of each SIGHUP, for `mailrelayd reload` (the unit's ExecReload): one line,
// "<n> started", "<n> ok" or "<n> failed: <reason>", in $RUNTIME_DIRECTORY/reload-status
// (RuntimeDirectory= in the unit), replaced whole by rename(2). Does nothing without
// RUNTIME_DIRECTORY. Used by the signal loop only; not thread-safe.
class ReloadStatusFile {
 public:
  ReloadStatusFile();  // "0 started"
  void record(bool ok, const std::string& text);

 private:
  void write(const std::string& line) const;
  std::string path_;
  unsigned long count_ = 0;
};

// `mailrelayd reload --pid PID`: sends SIGHUP to PID and waits (at most `timeout`) for the next
// line of $RUNTIME_DIRECTORY/reload-status. Prints the verdict; 0 when the reload took, 1 when it
// failed, the daemon died or did not answer, 2 when there is no status file to read.
int reload_and_wait(long pid, std::chrono::seconds timeout);

}  // namespace mailrelay
