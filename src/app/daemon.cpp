#include "daemon.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "redis_state_store.h"

namespace mailrelay {
namespace {

// Descriptors: one per client connection and per provider connection. The soft limit (often
// 1024) goes up to the hard one; connections are capped below what remains.
std::size_t raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return static_cast<std::size_t>(limit.rlim_cur);
}

FrontDoorSettings door_settings(const Config& config, spdlog::logger& log) {
  FrontDoorSettings door;
  door.event_threads = static_cast<std::size_t>(config.event_threads);
  door.max_body_bytes_in_flight = config.max_body_bytes_in_flight;
  door.max_connections_per_ip = static_cast<std::size_t>(config.max_connections_per_ip);
  const std::size_t descriptors = raise_descriptor_limit();
  // Half for clients: each send in flight also holds a provider connection.
  door.max_connections = config.max_connections > 0 ? static_cast<std::size_t>(config.max_connections)
                                                    : std::max<std::size_t>(64, std::min<std::size_t>(65536, descriptors / 2));
  if (door.max_connections < static_cast<std::size_t>(config.max_in_flight)) {
    log.warn("only {} descriptors: at most {} client connections (raise LimitNOFILE for --max-in-flight {})",
             descriptors, door.max_connections, config.max_in_flight);
  }
  return door;
}

// Audit lines to the Redis stream (--audit-stream redis); the store queues them, never blocking.
class StreamTap final : public AuditTap {
 public:
  explicit StreamTap(StateStore& store) : store_(store) {}
  void line(std::string_view text) override { store_.stream(text); }

 private:
  StateStore& store_;
};

}  // namespace

Daemon::Daemon(Config config, spdlog::logger& log) : config_(std::move(config)), log_(log) {}

Result<std::unique_ptr<Daemon>, ConfigExit> Daemon::start(Config config, spdlog::logger& log,
                                                          std::function<void()> on_server_exit) {
  std::unique_ptr<Daemon> d(new Daemon(std::move(config), log));
  const Config& c = d->config_;
  auto audit = AuditLog::open({c.audit_log, c.audit_log_max_bytes, c.audit_log_max_files, c.audit_recipient_key},
                              d->clock_, log);
  if (!audit) return ConfigExit{2, audit.error().message};
  d->audit_ = std::move(audit).value();
  if (c.state_store == "memory") {
    d->store_ = std::make_unique<MemoryStateStore>(d->clock_, c.message_status_ttl_seconds);
  } else {
    RedisSettings redis{c.state_store, c.state_store_password, c.state_store_prefix,
                        std::chrono::milliseconds(c.state_store_timeout_ms),
                        c.audit_stream == "redis" ? static_cast<std::size_t>(c.audit_stream_max_len) : 0,
                        c.message_status_ttl_seconds};
    auto store = RedisStateStore::open(std::move(redis), log);
    if (!store) return ConfigExit{2, store.error().message};
    d->store_ = std::move(store).value();
    if (c.audit_stream == "redis") {
      d->stream_tap_ = std::make_unique<StreamTap>(*d->store_);
      d->audit_->set_tap(d->stream_tap_.get());
    }
  }
  // A shared store is read back every 250 ms: a change on one instance reaches all within 1 s.
  d->control_ = std::make_unique<ProviderControl>(
      *d->store_, c.state_store == "memory" ? std::chrono::milliseconds(0) : std::chrono::milliseconds(250));
  d->transport_ = std::make_unique<CurlTransport>(CurlTransportOptions{c.ca_file, c.proxy});
  d->health_ = std::make_unique<ProviderHealth>(BreakerSettings{}, d->clock_, log);
  d->retry_budget_ = std::make_unique<RetryBudget>(RetryBudgetSettings{}, d->clock_);
  auto runtime = build_runtime(c, *d->transport_, d->clock_, d->health_.get(), d->retry_budget_.get(),
                               {d->audit_.get(), &d->metrics_});
  if (!runtime) return ConfigExit{2, runtime.error().message};
  const std::string clients =
      runtime.value()->tokens ? std::to_string(runtime.value()->tokens->size()) + " clients" : "off (loopback only)";
  if (c.state_store != "memory" && c.audit_recipient_key.empty()) {
    log.warn("no --audit-recipient-key-file: suppressions in the shared store are hashed without a secret key, "
             "so anyone who can read the store can test addresses against them");
  }
  for (const auto& warning : c.warnings) log.warn("{}", warning);
  if (c.max_queue >= 0) log.warn("--max-queue is deprecated and ignored: admission is --max-in-flight");
  if (c.threads >= 0) log.warn("--threads is deprecated and ignored: requests run on the event loops (--event-threads)");
  d->server_ = std::make_unique<FrontDoor>(door_settings(c, log));
  d->api_ = std::make_unique<HttpApi>(std::move(runtime).value(), *d->audit_, d->metrics_, *d->store_, d->control_.get(),
                                      ApiSettings{c.max_body_bytes, static_cast<std::size_t>(c.max_in_flight),
                                                  c.audit_recipient_key, d->transport_.get(),
                                                  static_cast<std::size_t>(c.max_batch)},
                                      d->clock_, log);
  d->api_->install(*d->server_);
  d->port_ = d->server_->bind(c.listen_host, c.listen_port);
  if (d->port_ < 0) return ConfigExit{1, "cannot listen on " + c.listen + ": " + std::strerror(errno)};
  log.info("listening on {} providers={} max_in_flight={} event_threads={} auth={} state_store={}", d->where(),
           comma_joined(c.providers), c.max_in_flight, d->server_->event_threads(), clients, d->store_->describe());
  Daemon* self = d.get();
  d->serving_ = std::thread([self, on_server_exit = std::move(on_server_exit)] {
    self->server_->serve();
    if (!self->stopping_ && on_server_exit) on_server_exit();
  });
  for (int i = 0; i < 5000 && !d->server_->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return d;
}

Daemon::~Daemon() {
  if (serving_.joinable()) {
    stop();
    if (serving_.joinable()) serving_.detach();  // stuck requests: the process is ending
  }
}

std::string Daemon::where() const {
  const std::string& host = config_.listen_host;
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port_);
}

std::string Daemon::providers() const { return comma_joined(config_.providers); }

Result<ReloadReport> Daemon::reload(const Config& next) {
  if (!config_.tokens_file.empty() && next.tokens_file.empty()) {
    return Error{"config", "the new configuration has no tokens file; refusing to turn authentication off by reload", ""};
  }
  auto runtime = build_runtime(next, *transport_, clock_, health_.get(), retry_budget_.get(), {audit_.get(), &metrics_});
  if (!runtime) return runtime.error();
  ReloadReport report{restart_only_changes(config_, next), comma_joined(next.providers)};
  api_->set_runtime(std::move(runtime).value());
  // Options that need a restart keep their running values: they stay what the process has.
  const Config before = config_;
  config_ = next;
  for (const auto& option : report.restart_only) log_.warn("reload: {} changed; it takes effect only after a restart", option);
  config_.listen = before.listen;
  config_.listen_host = before.listen_host;
  config_.listen_port = before.listen_port;
  return report;
}

bool Daemon::stop() {
  if (stopped_) return true;
  stopped_ = true;
  stopping_ = true;
  // New sends get 503 from here on and every answer closes its connection; the listener closes;
  // requests in progress finish, for at most the deadline and 5 s more (README "Operating").
  api_->start_draining();
  if (!server_->shutdown(std::chrono::milliseconds(config_.deadline_ms) + std::chrono::seconds(5))) {
    std::string ids;
    for (const auto& id : api_->sends().in_flight_ids()) ids += (ids.empty() ? "" : ",") + id;
    log_.error("shutdown: requests still running after the deadline, abandoned: {}", ids.empty() ? "(none a send)" : ids);
    return false;
  }
  serving_.join();
  return true;
}

}  // namespace mailrelay
