#include "service_notifier.h"

#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace mailrelay {

// unset_environment=0: the watchdog thread keeps using NOTIFY_SOCKET after start-up.
void ServiceNotifier::ready(const std::string& status) const {
  sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%lu", status.c_str(), static_cast<unsigned long>(getpid()));
}

void ServiceNotifier::reloading() const { sd_notify(0, "RELOADING=1\nSTATUS=reloading configuration"); }

void ServiceNotifier::stopping(const std::string& status) const {
  sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status.c_str());
}

void ServiceNotifier::status(const std::string& status) const { sd_notifyf(0, "STATUS=%s", status.c_str()); }

void ServiceNotifier::watchdog() const { sd_notify(0, "WATCHDOG=1"); }

std::optional<std::chrono::milliseconds> ServiceNotifier::watchdog_interval() const {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::milliseconds(usec / 2000);
}

}  // namespace mailrelay
