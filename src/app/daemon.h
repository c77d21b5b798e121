// Daemon: one running mailrelayd: the audit log, the state store, the runtime, the HTTP server,
// built from a Config, and the reload policy (SIGHUP). main() only parses, signals and notifies
// systemd. Thread-safe as far as main needs: reload() and reopen_audit() come from the signal
// thread while the server serves; stop() once.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/logger.h>

#include "audit_log.h"
#include "circuit_breaker.h"
#include "clock.h"
#include "config.h"
#include "curl_transport.h"
#include "front_door.h"
#include "http_api.h"
#include "metrics.h"
#include "provider_control.h"
#include "result.h"
#include "retry_budget.h"
#include "runtime.h"
#include "state_store.h"

namespace mailrelay {

struct ReloadReport {
  std::vector<std::string> restart_only;  // options that changed but take effect only on restart
  std::string providers;                  // the new provider order, comma separated
};

class Daemon {
 public:
  // Opens everything `config` names, binds the listener and starts serving. Fails with the exit
  // code (2: configuration, 1: cannot listen) and the reason. REQUIRES: curl_global_init done.
  // `on_server_exit` runs if the server stops serving on its own (main wakes its signal loop).
  static Result<std::unique_ptr<Daemon>, ConfigExit> start(Config config, spdlog::logger& log,
                                                           std::function<void()> on_server_exit = {});
  ~Daemon();

  int port() const { return port_; }
  // "host:port" as clients would write it ([::1]:8080).
  std::string where() const;
  std::string providers() const;

  // The new configuration replaces the running one for new requests, or nothing changes and the
  // reason is returned: its runtime cannot be built (tokens file, provider settings), or it
  // would turn authentication off. Options that need a restart are reported, not applied.
  Result<ReloadReport> reload(const Config& next);
  // Reopens the audit log (SIGUSR1). "" on success, else why not.
  std::string reopen_audit() { return audit_->reopen(); }

  // New sends get 503; requests in progress finish within the deadline and 5 s more. False
  // when some did not (their ids are logged): the caller must exit without joining them.
  bool stop();
  // False once the server stopped on its own (it could not serve).
  bool serving() const { return server_->is_running(); }
  // Every event loop and the accept loop turned within `max_age` (the systemd watchdog).
  bool alive(std::chrono::milliseconds max_age) const { return server_->alive(max_age); }

 private:
  Daemon(Config config, spdlog::logger& log);

  Config config_;
  spdlog::logger& log_;
  SystemClock clock_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<CurlTransport> transport_;
  Metrics metrics_{MAILRELAY_VERSION};
  std::unique_ptr<ProviderHealth> health_;   // outlives reloads: a provider down stays skipped
  std::unique_ptr<RetryBudget> retry_budget_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<AuditTap> stream_tap_;
  std::unique_ptr<ProviderControl> control_;
  std::unique_ptr<FrontDoor> server_;
  std::unique_ptr<HttpApi> api_;
  std::thread serving_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace mailrelay
