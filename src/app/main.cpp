// mailrelayd: wiring only. Parse config, build the objects, serve, handle signals.
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#include <curl/curl.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "check_config.h"
#include "config.h"
#include "daemon.h"
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

// The process holds API keys and signing keys: no core dump of it, and no ptrace or
// /proc/<pid>/mem by other processes of the same user (README "Hostile input"; the unit also sets
// LimitCORE=0). Signals are blocked before any thread starts, so every thread inherits the mask
// and only the sigwait loop ever sees them (no async handlers). A SIGTERM during start-up stays
// pending.
void harden(sigset_t& signals) {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Bodies of megabytes are allocated and freed all the time: with a fixed mmap threshold they go
  // back to the kernel when freed (glibc's default threshold grows after the first large free,
  // after which such buffers stay in the heap and RSS never comes down after a load).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
}

// hash-address, reload and check-config: their exit status; nullopt for the daemon itself.
std::optional<int> run_command(const std::vector<std::string>& args) {
  if (args.empty()) return std::nullopt;
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "--version") {
    std::printf("mailrelayd %s\n", MAILRELAY_VERSION);
    return 0;
  }
  if (args[0] == "hash-address") {
    auto command = parse_hash_address(rest);
    if (!command) return print_exit(command.error());
    if (!command.value().note.empty()) std::fprintf(stderr, "%s\n", command.value().note.c_str());
    std::printf("%s\n", hash_address(command.value().key, command.value().address).c_str());
    return 0;
  }
  if (args[0] == "reload") {
    // The unit's ExecReload: `mailrelayd reload --pid $MAINPID`.
    if (args.size() != 3 || args[1] != "--pid") return print_exit(ConfigExit{2, "usage: mailrelayd reload --pid PID"});
    return reload_and_wait(std::strtol(args[2].c_str(), nullptr, 10), std::chrono::seconds(60));
  }
  if (args[0] == "check-config") {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    auto report = check_config(rest);
    curl_global_cleanup();
    return print_exit(report ? ConfigExit{0, report.value()} : report.error());
  }
  return std::nullopt;
}

// Feeds systemd's watchdog only while every event loop and the accept loop keep turning: a
// wedged loop stops the pings and systemd restarts the process. Judged from the loops' own
// progress, never by a request through the listener (a full connection table would stop it).
class Watchdog {
 public:
  Watchdog(ServiceNotifier& notifier, const Daemon& daemon, spdlog::logger& log) {
    auto interval = notifier.watchdog_interval();
    if (!interval) return;
    thread_ = std::thread([this, &notifier, &daemon, &log, interval = *interval] {
      // A loop turns at least every 100 ms; a turn late by a second is a wedged loop, not a busy one.
      const auto max_age = std::max(interval, std::chrono::milliseconds(1000));
      std::unique_lock<std::mutex> lock(mutex_);
      while (!stop_cv_.wait_for(lock, interval, [&] { return stopping_; })) {
        if (daemon.alive(max_age)) notifier.watchdog();
        else log.warn("watchdog: an event loop has not turned for {} ms; not pinging systemd", max_age.count());
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

// SIGHUP: same flags and environment, the config and tokens files read again. A broken new
// configuration is reported and the running one kept. The verdict goes to the log, to systemd's
// status line and to the file `mailrelayd reload` waits on.
void reload(Daemon& daemon, const std::vector<std::string>& args, ServiceNotifier& notifier, ReloadStatusFile& status,
            spdlog::logger& log) {
  auto verdict = [&](bool ok, const std::string& text) {
    status.record(ok, ok ? "" : text);
    notifier.ready(ok ? "serving on " + daemon.where() + ", providers " + text
                      : "reload failed, running the previous configuration: " + text);
  };
  notifier.reloading();
  auto reloaded = load_config(args);
  std::string problem = reloaded ? "" : reloaded.error().text;
  if (reloaded) {
    auto report = daemon.reload(reloaded.value());
    if (report) {
      log.info("reloaded configuration: providers={}", report.value().providers);
      return verdict(true, report.value().providers);
    }
    problem = report.error().message;
  }
  log.error("reload failed, keeping the running configuration: {}", problem);
  verdict(false, problem);
}

// Until SIGTERM or SIGINT: SIGHUP reloads, SIGUSR1 reopens the audit log.
void serve_signals(const sigset_t& signals, Daemon& daemon, const std::vector<std::string>& args,
                   ServiceNotifier& notifier, ReloadStatusFile& status, spdlog::logger& log) {
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT) {
      log.info("received {}, finishing in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      notifier.stopping("finishing in-flight requests");
      return;
    }
    if (sig == SIGUSR1) {
      const std::string failed = daemon.reopen_audit();
      if (failed.empty()) log.info("received SIGUSR1, reopened the audit log");
      else log.error("received SIGUSR1, could not reopen the audit log: {}", failed);
      continue;
    }
    reload(daemon, args, notifier, status, log);
  }
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t signals;
  harden(signals);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (auto status = run_command(args)) return *status;
  auto loaded = load_config(args);
  if (!loaded) return print_exit(loaded.error());
  const Config config = std::move(loaded).value();

  // Operational log to stderr (journald); injected, never through spdlog's global registry.
  auto log = std::make_shared<spdlog::logger>("mailrelayd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  log->flush_on(spdlog::level::info);

  // libcurl's global state is set up once, before any thread exists.
  curl_global_init(CURL_GLOBAL_DEFAULT);
  auto started = Daemon::start(config, *log, [] { kill(getpid(), SIGTERM); });  // wakes the signal loop
  if (!started) {
    log->error("{}", started.error().text);
    curl_global_cleanup();
    return started.error().code;
  }
  std::unique_ptr<Daemon> daemon = std::move(started).value();
  ServiceNotifier notifier;
  ReloadStatusFile reload_status;
  notifier.ready("serving on " + daemon->where() + ", providers " + daemon->providers());
  {
    Watchdog watchdog(notifier, *daemon, *log);
    serve_signals(signals, *daemon, args, notifier, reload_status, *log);
    if (!daemon->stop()) std::_Exit(1);  // the stuck threads cannot be joined
  }
  daemon.reset();
  curl_global_cleanup();
  log->info("stopped");
  return 0;
}
