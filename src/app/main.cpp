// mailrelayd: wiring only. Parse config, build the objects, serve, handle signals.
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <curl/curl.h>
#include <httplib.h>
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

}  // namespace

int main(int argc, char** argv) {
  // The process holds API keys and signing keys: no core dump of it, and no ptrace or
  // /proc/<pid>/mem by other processes of the same user (README "Hostile input"; the unit also sets LimitCORE=0).
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
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
  if (!args.empty() && args[0] == "reload") {
    // The unit's ExecReload: `mailrelayd reload --pid $MAINPID`.
    if (args.size() != 3 || args[1] != "--pid") {
      return print_exit(ConfigExit{2, "usage: mailrelayd reload --pid PID"});
    }
    return reload_and_wait(std::strtol(args[2].c_str(), nullptr, 10), std::chrono::seconds(60));
  }
  if (!args.empty() && args[0] == "check-config") {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    auto report = check_config(std::vector<std::string>(args.begin() + 1, args.end()));
    curl_global_cleanup();
    return print_exit(report ? ConfigExit{0, report.value()} : report.error());
  }
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
  const int port = daemon->port();
  ServiceNotifier notifier;
  ReloadStatusFile reload_status;
  notifier.ready("serving on " + daemon->where() + ", providers " + daemon->providers());

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
      const std::string failed = daemon->reopen_audit();
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
      auto report = daemon->reload(reloaded.value());
      if (report) {
        log->info("reloaded configuration: providers={}", report.value().providers);
        reload_status.record(true, "");
        notifier.ready("serving on " + daemon->where() + ", providers " + report.value().providers);
        continue;
      }
      problem = report.error().message;
    }
    log->error("reload failed, keeping the running configuration: {}", problem);
    reload_status.record(false, problem);
    notifier.ready("reload failed, running the previous configuration: " + problem);
  }
  if (!daemon->stop()) std::_Exit(1);  // the stuck threads cannot be joined
  {
    std::lock_guard<std::mutex> lock(stop_mutex);
    stopping = true;
  }
  stop_cv.notify_all();
  if (watchdog.joinable()) watchdog.join();
  daemon.reset();
  curl_global_cleanup();
  log->info("stopped");
  return 0;
}
