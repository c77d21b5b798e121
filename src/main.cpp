// mailrelayd: wiring only. Parse config, build the objects, serve, handle signals.
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <curl/curl.h>
#include <httplib.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "audit_log.h"
#include "clock.h"
#include "config.h"
#include "curl_transport.h"
#include "http_api.h"
#include "idempotency_cache.h"
#include "metrics.h"
#include "runtime.h"
#include "front_door.h"
#include "service_notifier.h"

using namespace mailrelay;

namespace {

int print_exit(const ConfigExit& exit) {
  if (exit.code == 0) {
    std::fputs(exit.text.c_str(), stdout);
  } else {
    std::fprintf(stderr, "mailrelayd: %s\n", exit.text.c_str());
  }
  return exit.code;
}

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
  door.pool.min_threads = static_cast<std::size_t>(config.threads);
  // Every send in flight holds a thread; 256 more answer health checks and refusals meanwhile.
  door.pool.max_threads = static_cast<std::size_t>(config.max_in_flight) + 256;
  door.max_body_bytes_in_flight = config.max_body_bytes_in_flight;
  const std::size_t descriptors = raise_descriptor_limit();
  // Half for clients: each send in flight also holds a provider connection.
  door.max_connections = std::max<std::size_t>(64, std::min<std::size_t>(65536, descriptors / 2));
  if (door.max_connections < static_cast<std::size_t>(config.max_in_flight)) {
    log.warn("only {} descriptors: at most {} client connections (raise LimitNOFILE for --max-in-flight {})",
             descriptors, door.max_connections, config.max_in_flight);
  }
  return door;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are blocked before any thread starts, so every thread inherits the mask and only the
  // sigwait loop below ever sees them (no async handlers). A SIGTERM during start-up stays pending.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Bodies of megabytes are allocated and freed all the time: with a fixed mmap threshold they go
  // back to the kernel when freed (glibc's default threshold grows after the first large free,
  // after which such buffers stay in the heap and RSS never comes down after a load).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);

  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "hash-address") {
    auto command = parse_hash_address(std::vector<std::string>(args.begin() + 1, args.end()));
    if (!command) return print_exit(command.error());
    std::printf("%s\n", hash_address(command.value().key, command.value().address).c_str());
    return 0;
  }
  auto loaded = load_config(args);
  if (!loaded) return print_exit(loaded.error());
  const Config config = std::move(loaded).value();

  // Operational log to stderr (journald); injected, never through spdlog's global registry.
  auto log = std::make_shared<spdlog::logger>("mailrelayd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  log->flush_on(spdlog::level::info);

  AuditSettings audit_settings{config.audit_log, config.audit_log_max_bytes, config.audit_log_max_files,
                               config.audit_recipient_key};
  SystemClock clock;
  auto opened_audit = AuditLog::open(audit_settings, clock, *log);
  if (!opened_audit) {
    log->error("{}", opened_audit.error().message);
    return 2;
  }
  std::unique_ptr<AuditLog> audit = std::move(opened_audit).value();

  // libcurl's global state is set up once, before any thread exists.
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CurlTransport transport(CurlTransportOptions{config.ca_file, config.proxy});
  Metrics metrics(MAILRELAY_VERSION);
  // Provider health outlives reloads: a provider that is down stays skipped after a SIGHUP.
  ProviderHealth health(BreakerSettings{}, clock, *log);
  RetryBudget retry_budget(RetryBudgetSettings{}, clock);
  auto runtime = build_runtime(config, transport, clock, &health, &retry_budget, {audit.get(), &metrics});
  if (!runtime) {
    log->error("{}", runtime.error().message);
    curl_global_cleanup();
    return 2;
  }
  const bool auth = runtime.value()->tokens != nullptr;
  std::string clients = auth ? std::to_string(runtime.value()->tokens->size()) + " clients" : "off (loopback only)";
  if (config.max_queue >= 0) log->warn("--max-queue is deprecated and ignored: admission is --max-in-flight");
  FrontDoor server(door_settings(config, *log));
  // 24 hours of keys, as Stripe and the IETF draft suggest; 100k entries of a few hundred bytes.
  IdempotencyCache idempotency(100000, std::chrono::hours(24), clock);
  HttpApi api(runtime.value(), *audit, metrics, idempotency,
              ApiSettings{config.max_body_bytes, static_cast<std::size_t>(config.max_in_flight)}, clock, *log);
  Config current = config;

  api.install(server);

  const int port = server.bind(config.listen_host, config.listen_port);
  if (port < 0) {
    log->error("cannot listen on {}: {}", config.listen, std::strerror(errno));
    curl_global_cleanup();
    return 1;
  }
  std::string where = config.listen_host.find(':') != std::string::npos ? "[" + config.listen_host + "]" : config.listen_host;
  auto joined = [](const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
    return out;
  };
  const std::string order = joined(config.providers);
  log->info("listening on {}:{} providers={} max_in_flight={} auth={}", where, port, order, config.max_in_flight, clients);

  std::thread serving([&] {
    server.serve();
    kill(getpid(), SIGTERM);  // if the server stops on its own, wake the signal loop
  });
  for (int i = 0; i < 5000 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ServiceNotifier notifier;
  notifier.ready("serving on " + where + ":" + std::to_string(port) + ", providers " + order);

  // The watchdog is fed only while the server answers its own /healthz: a wedged server (all
  // workers stuck) stops the pings and systemd restarts it.
  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stopping = false;
  std::thread watchdog;
  if (auto interval = notifier.watchdog_interval()) {
    std::string self = config.listen_host == "0.0.0.0" ? "127.0.0.1" : config.listen_host == "::" ? "::1" : config.listen_host;
    watchdog = std::thread([&, interval = *interval, self] {
      httplib::Client client(self, port);
      client.set_connection_timeout(1, 0);
      client.set_read_timeout(std::max<time_t>(1, interval.count() / 1000), 0);
      std::unique_lock<std::mutex> lock(stop_mutex);
      while (!stop_cv.wait_for(lock, interval, [&] { return stopping; })) {
        lock.unlock();
        auto r = client.Get("/healthz");
        if (r && r->status == 200) notifier.watchdog();
        else log->warn("watchdog: /healthz did not answer; not pinging systemd");
        lock.lock();
      }
    });
  }

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT) {
      log->info("received {}, finishing in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      notifier.stopping("finishing in-flight requests");
      break;
    }
    if (sig == SIGUSR1) {
      const std::string failed = audit->reopen();
      if (failed.empty()) log->info("received SIGUSR1, reopened the audit log");
      else log->error("received SIGUSR1, could not reopen the audit log: {}", failed);
      continue;
    }
    // SIGHUP: same flags and environment, the config and tokens files read again. A broken new
    // configuration is reported and the running one kept.
    notifier.reloading();
    auto reloaded = load_config(args);
    std::string problem = reloaded ? "" : reloaded.error().text;
    if (reloaded) {
      if (!current.tokens_file.empty() && reloaded.value().tokens_file.empty()) {
        problem = "the new configuration has no tokens file; refusing to turn authentication off by reload";
      } else if (auto next = build_runtime(reloaded.value(), transport, clock, &health, &retry_budget, {audit.get(), &metrics})) {
        for (const auto& option : restart_only_changes(current, reloaded.value())) {
          log->warn("reload: {} changed; it takes effect only after a restart", option);
        }
        api.set_runtime(std::move(next).value());
        current = std::move(reloaded).value();
        const std::string providers = joined(current.providers);
        log->info("reloaded configuration: providers={}", providers);
        notifier.ready("serving on " + where + ":" + std::to_string(port) + ", providers " + providers);
        continue;
      } else {
        problem = next.error().message;
      }
    }
    log->error("reload failed, keeping the running configuration: {}", problem);
    notifier.ready("reload failed, running the previous configuration: " + problem);
  }
  // New sends get 503 from here on and every answer closes its connection; the listener closes;
  // requests in progress finish, for at most the deadline and 5 s more (SPEC section 8).
  api.start_draining();
  if (!server.shutdown(std::chrono::milliseconds(config.deadline_ms) + std::chrono::seconds(5))) {
    std::string ids;
    for (const auto& id : api.sends().in_flight_ids()) ids += (ids.empty() ? "" : ",") + id;
    log->error("shutdown: requests still running after the deadline, abandoned: {}", ids.empty() ? "(none a send)" : ids);
    audit->flush();
    std::_Exit(1);  // the stuck threads cannot be joined
  }
  serving.join();
  {
    std::lock_guard<std::mutex> lock(stop_mutex);
    stopping = true;
  }
  stop_cv.notify_all();
  if (watchdog.joinable()) watchdog.join();
  audit->flush();
  curl_global_cleanup();
  log->info("stopped");
  return 0;
}
