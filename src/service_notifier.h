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
  void status(const std::string& status) const;
  void watchdog() const;
  // Half of WATCHDOG_USEC when systemd expects pings from this process, else nullopt.
  std::optional<std::chrono::milliseconds> watchdog_interval() const;
};

}  // namespace mailrelay
