#include "check_config.h"

#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <unistd.h>

#include <memory>

#include "curl_transport.h"
#include "redis_state_store.h"
#include "runtime.h"

namespace mailrelay {
namespace {

// Whether the audit log can be appended to where it is, without creating or touching it.
std::string audit_problem(const std::string& path) {
  if (path == "-") return "";
  if (access(path.c_str(), F_OK) == 0) return access(path.c_str(), W_OK) == 0 ? "" : "is not writable";
  const std::size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (access(dir.c_str(), F_OK) != 0) return "is in a directory that does not exist (" + dir + ")";
  return access(dir.c_str(), W_OK) == 0 ? "" : "cannot be created: " + dir + " is not writable";
}

}  // namespace

Result<std::string, ConfigExit> check_config(const std::vector<std::string>& args) {
  auto loaded = load_config(args);
  if (!loaded) return loaded.error();
  const Config& c = loaded.value();
  SystemClock clock;
  CurlTransport transport(CurlTransportOptions{c.ca_file, c.proxy});
  auto runtime = build_runtime(c, transport, clock, nullptr, nullptr, {});
  if (!runtime) return ConfigExit{2, runtime.error().message};
  if (auto problem = audit_problem(c.audit_log); !problem.empty()) {
    return ConfigExit{2, "--audit-log " + c.audit_log + " " + problem};
  }
  std::string store = "memory (this process only)";
  if (c.state_store != "memory") {
    auto log = std::make_shared<spdlog::logger>("check", std::make_shared<spdlog::sinks::null_sink_mt>());
    RedisSettings settings{c.state_store, c.state_store_password, c.state_store_prefix,
                           std::chrono::milliseconds(std::max(c.state_store_timeout_ms, 1000)), 0};
    auto opened = RedisStateStore::open(std::move(settings), *log);
    if (!opened) return ConfigExit{2, opened.error().message};
    store = opened.value()->describe();
    if (auto read = opened.value()->overrides(); !read) {
      return ConfigExit{2, "the state store " + store + " does not answer: " + read.error().message};
    }
    store += " (reachable)";
  }
  const Runtime& r = *runtime.value();
  std::string out;
  auto line = [&out](const std::string& name, const std::string& value) { out += name + ": " + value + "\n"; };
  line("listen", c.listen);
  line("providers", comma_joined(c.providers) + " (strategy " + c.strategy + ")");
  for (const auto& name : c.providers) {
    for (const auto& [key, value] : c.provider_configs.at(name).options) {
      if (!value.empty()) line("  " + name + "-" + key, value);
    }
  }
  line("clients", r.tokens ? std::to_string(r.tokens->size()) + " (" + c.tokens_file + ")" : "loopback only, no tokens file");
  line("audit log", c.audit_log + (c.audit_recipient_key.empty() ? "" : " (recipient hashes on)"));
  line("state store", store);
  line("rate limits", c.rate_limits.empty() ? "none" : c.rate_limits);
  std::vector<std::string> webhooks;
  for (const auto* p : provider_registry()) {
    if (c.webhook_secrets.count(p->name)) webhooks.push_back(p->name);
  }
  line("webhooks", webhooks.empty() ? "none" : comma_joined(webhooks));
  line("events forwarded to", c.events_forward_url.empty() ? "nowhere" : c.events_forward_url);
  line("limits", "deadline " + std::to_string(c.deadline_ms) + " ms, attempt " + std::to_string(c.attempt_timeout_ms) +
                     " ms, max in flight " + std::to_string(c.max_in_flight));
  for (const auto& warning : c.warnings) line("warning", warning);
  out += "configuration OK\n";
  return out;
}

}  // namespace mailrelay
