#include "config.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <arpa/inet.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <curl/curl.h>

#include "ascii.h"
#include "email.h"
#include "redis_state_store.h"

namespace mailrelay {
namespace {

constexpr const char* kEnvPrefix = "MAILRELAY_";

std::string env_name(const std::string& option) {
  std::string out = kEnvPrefix;
  for (char c : option) out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// Declares every option on `app`, bound to `c`. Used twice by load_config (see there).
// --name (and MAILRELAY_NAME) bound to `target`.
template <class T>
CLI::Option* add(CLI::App& app, const std::string& name, T& target, const std::string& help) {
  return app.add_option("--" + name, target, help)->envname(env_name(name));
}

void describe(CLI::App& app) {
  app.name("mailrelayd");
  app.description(
      "mailrelayd: a synchronous HTTP relay for transactional email, through the first healthy provider of --providers.\n"
      "Every option can also come from MAILRELAY_<OPTION> in the environment or from --config FILE;\n"
      "flags win over environment, environment over the file. Secrets are read from files,\n"
      "the environment (SENDGRID_API_KEY, MAILGUN_API_KEY, ...) or systemd credentials, never from flags.");
  app.footer(
      "Commands:\n"
      "  mailrelayd check-config [OPTIONS]   load everything a start would, print it (no secret), exit 0 or 2\n"
      "  mailrelayd hash-address ADDRESS     the keyed hash the audit log writes for ADDRESS\n"
      "  mailrelayd reload --pid PID         SIGHUP the daemon and wait for its verdict (the unit's ExecReload)\n"
      "  mailrelayd --version                print the version and exit");
  app.set_help_flag("-h,--help", "Print this help and exit");
}

// The listening side and admission.
void declare_serving_options(CLI::App& app, Config& c) {
  add(app, "config", c.config_file, "INI/TOML file with option = value lines")->check(CLI::ExistingFile);
  add(app, "listen", c.listen, "HOST:PORT to serve on ([::1]:8080 for IPv6; port 0 picks a free one)")->capture_default_str();
  add(app, "event-threads", c.event_threads,
      "event loops: threads that own the connections, the provider calls and the timers (0: one per core)")
      ->capture_default_str();
  add(app, "threads", c.threads, "deprecated and ignored: there is no thread per request; see --event-threads");
  add(app, "max-queue", c.max_queue, "deprecated and ignored: admission is --max-in-flight");
  add(app, "max-batch", c.max_batch, "messages in one POST /v1/send/batch (1 to 1000)")->capture_default_str();
  add(app, "max-in-flight", c.max_in_flight, "sends handled at once; a send beyond it gets 503 overloaded at once")
      ->capture_default_str();
  add(app, "max-body-bytes-in-flight", c.max_body_bytes_in_flight,
      "request bodies held in memory at once; a request beyond it gets 503 overloaded")->capture_default_str();
  add(app, "max-connections", c.max_connections,
      "open client connections; at the limit, idle ones (then the oldest without a whole request head) are "
      "closed to admit new ones (0: half the descriptor limit, 64 to 65536)")
      ->capture_default_str();
  add(app, "max-connections-per-ip", c.max_connections_per_ip,
      "open connections from one client address; one more gets 503 overloaded and is closed (0: no limit; "
      "behind a balancer, all clients share its address)")
      ->capture_default_str();
  add(app, "providers", c.providers, "provider order, comma separated: " + provider_names())
      ->delimiter(',')->capture_default_str();
}

// Each provider's own options and secrets, from the registry. The map's nodes stay put, so CLI11
// can bind them.
void declare_provider_options(CLI::App& app, Config& c) {
  for (const auto* p : provider_registry()) {
    for (const auto& o : p->options) {
      std::string flag = p->name + "-" + o.key;
      auto [it, fresh] = c.provider_flags.emplace(flag, o.default_value);
      auto* option = add(app, flag, it->second, o.help);
      if (!o.default_value.empty()) option->capture_default_str();
    }
    for (const auto& secret : p->secrets) {
      std::string flag = p->name + "-" + secret.key + "-file";
      auto [it, fresh] = c.provider_flags.emplace(flag, "");
      add(app, flag, it->second, "file holding the " + p->name + " " + secret.label + " (else env " + secret.env +
                                ", else credential " + secret.credential + ")" + (secret.required ? "" : "; optional"));
    }
    if (const auto& w = p->webhook) {
      std::string flag = p->name + "-" + w->secret.key + "-file";
      auto [it, fresh] = c.provider_flags.emplace(flag, "");
      add(app, flag, it->second, w->help + " (else env " + w->secret.env + ", else credential " + w->secret.credential +
                                "); without it /v1/events/" + p->name + " is 404");
    }
  }
}

// The relay's policy: order, strategy, timeouts, retries.
void declare_relay_options(CLI::App& app, Config& c) {
  add(app, "strategy", c.strategy,
      "which provider goes first: failover (the order given), round-robin, weighted, or adaptive (the fastest and "
      "least failing of late); the rest of the order is the fallback")
      ->capture_default_str();
  add(app, "weights", c.weights, "for --strategy weighted: sendgrid=3,mailgun=1 (unlisted providers weigh 1)");
  add(app, "attempt-timeout-ms", c.attempt_timeout_ms, "one provider call, connect to last byte")->capture_default_str();
  add(app, "deadline-ms", c.deadline_ms, "whole request: all attempts and backoff")->capture_default_str();
  add(app, "max-retries", c.max_retries, "extra tries on the same provider for retryable failures")->capture_default_str();
  add(app, "failover-on-timeout", c.failover_on_timeout,
      "after an ambiguous timeout, try the next provider (true) or answer 504 (false)")->capture_default_str();
  add(app, "max-body-bytes", c.max_body_bytes, "larger request bodies get 413")->capture_default_str();
}

// Clients, the audit log, the state store, rate limits, delivery events.
void declare_other_options(CLI::App& app, Config& c) {
  add(app, "tokens-file", c.tokens_file,
      "client tokens, one name:token a line (else credential tokens); without it only loopback is served");
  add(app, "audit-log", c.audit_log, "audit log path, - for stdout")->capture_default_str();
  add(app, "audit-log-max-bytes", c.audit_log_max_bytes, "rotate the audit log at this size; 0 = never")->capture_default_str();
  add(app, "audit-log-max-files", c.audit_log_max_files, "rotated audit logs kept")->capture_default_str();
  add(app, "audit-recipient-key-file", c.audit_recipient_key_file,
      "secret key (16+ bytes) for recipient hashes in the audit log (else credential audit_recipient_key); "
      "without it only counts and domains");
  add(app, "ca-file", c.ca_file, "CA bundle for provider TLS (default: the system store)");
  add(app, "proxy", c.proxy, "HTTP(S) proxy for provider calls; proxy environment variables are ignored");
  add(app, "state-store", c.state_store,
      "shared state (idempotency keys, provider overrides, rate limits): memory (this process), "
      "redis://[user@]host:port[/db] or unix:///path/redis.sock")->capture_default_str();
  add(app, "state-store-password-file", c.state_store_password_file,
      "file holding the Redis password (else env MAILRELAY_STATE_STORE_PASSWORD, else credential state_store_password)");
  add(app, "state-store-prefix", c.state_store_prefix, "prefix of every key in the store (fleets sharing one Redis)")
      ->capture_default_str();
  add(app, "state-store-timeout-ms", c.state_store_timeout_ms, "each store operation on the request path")->capture_default_str();
  add(app, "audit-stream", c.audit_stream, "redis: also append every audit line to the stream <prefix>audit");
  add(app, "audit-stream-max-len", c.audit_stream_max_len, "the stream's length, approximately (XADD MAXLEN ~)")
      ->capture_default_str();
  add(app, "message-status-ttl", c.message_status_ttl,
      "how long GET /v1/messages/{request_id} knows a message after its send: <n>s, <n>m, <n>h or <n>d (1s to 90d)")
      ->capture_default_str();
  add(app, "rate-limits", c.rate_limits, "per client: billing=20/s,signup=300/m,*=50/s (* for any other client); 429 beyond");
  add(app, "events-forward-url", c.events_forward_url,
      "POST each verified batch of delivery events here (https, or http on loopback); when it fails the provider retries");
  add(app, "events-forward-key-file", c.events_forward_key_file,
      "HMAC key of X-Mailrelay-Signature on forwarded events (else env MAILRELAY_EVENTS_FORWARD_KEY, else credential "
      "events_forward_key)");
}

void declare_options(CLI::App& app, Config& c) {
  describe(app);
  declare_serving_options(app, c);
  declare_provider_options(app, c);
  declare_relay_options(app, c);
  declare_other_options(app, c);
}

// Where the systemd credential `name` is: $CREDENTIALS_DIRECTORY/<name> inside the unit; outside it
// (check-config or hash-address run by hand, as root), where the unit's LoadCredential= lines
// take it from: systemd's credential stores, as mailrelay.<name>. "" when it is nowhere.
std::string credential_path(const std::string& name) {
  if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY"); dir && *dir) {
    std::string path = std::string(dir) + "/" + name;
    return access(path.c_str(), F_OK) == 0 ? path : "";
  }
  for (const char* store : {"/etc/credstore", "/run/credstore", "/usr/lib/credstore"}) {
    std::string path = std::string(store) + "/mailrelay." + name;
    if (access(path.c_str(), F_OK) == 0) return path;
  }
  return "";
}

// A secret's whole file, trimmed. `source` says where the path came from (the option, or the
// credential) so that the message names what to fix.
Result<std::string, ConfigExit> read_secret_file(const std::string& path, const std::string& what,
                                                 const std::string& source, const std::string& credential) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    std::string text = "cannot read " + what + " from " + path + " (" + source + "): " + std::strerror(err);
    if (err == EACCES && getuid() != 0) {
      text += "; the unit's DynamicUser cannot read root's files: give it as the credential /etc/credstore/mailrelay." +
              credential + " instead (README, \"Secrets\"), or run this as root";
    }
    return ConfigExit{2, text};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string value = std::string(trim_space(ss.str()));
  if (value.empty()) return ConfigExit{2, what + " file " + path + " (" + source + ") is empty"};
  return value;
}

// --PROVIDER-KEY-file, else the environment, else the credential. "" for an optional secret given
// nowhere.
Result<std::string, ConfigExit> load_secret(const std::string& provider, const ProviderSecret& secret,
                                            const std::string& file, const std::string& flag) {
  std::string what = provider + " " + secret.label;
  if (!file.empty()) return read_secret_file(file, what, "--" + flag, secret.credential);
  if (const char* v = std::getenv(secret.env.c_str()); v && *v) return std::string(trim_space(v));
  if (auto path = credential_path(secret.credential); !path.empty()) {
    return read_secret_file(path, what, "credential " + secret.credential, secret.credential);
  }
  if (!secret.required) return std::string();
  return ConfigExit{2, "provider '" + provider + "' is listed in --providers but has no " + secret.label + ": set --" +
                           flag + ", " + secret.env + ", or the systemd credential " + secret.credential +
                           " (/etc/credstore/mailrelay." + secret.credential + ")"};
}

// The recipient key: --audit-recipient-key-file, else the credential audit_recipient_key. ""
// when neither is there (recipient hashes off).
Result<std::string, ConfigExit> load_recipient_key(const std::string& file) {
  const std::string path = file.empty() ? credential_path("audit_recipient_key") : file;
  if (path.empty()) return std::string();
  const std::string source = file.empty() ? "credential audit_recipient_key" : "--audit-recipient-key-file";
  auto key = read_secret_file(path, "audit recipient key", source, "audit_recipient_key");
  if (key && key.value().size() < 16) {
    return ConfigExit{2, "audit recipient key in " + path + " (" + source + ") is shorter than 16 bytes"};
  }
  return key;
}

std::optional<std::string> check_base_url(const std::string& option, const std::string& url) {
  CURLU* u = curl_url();
  char* scheme = nullptr;
  char* host = nullptr;
  std::optional<std::string> problem;
  if (curl_url_set(u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    problem = "--" + option + " is not a valid URL: " + url;
  } else {
    std::string h = host;
    if (h.size() > 2 && h.front() == '[') h = h.substr(1, h.size() - 2);
    if (std::string(scheme) == "http") {
      if (!is_loopback_host(h)) problem = "--" + option + " must use https (plain http only for loopback hosts): " + url;
    } else if (std::string(scheme) != "https") {
      problem = "--" + option + " must be an https URL: " + url;
    }
  }
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  return problem;
}

std::optional<std::string> split_listen(Config& c) {
  const std::string& s = c.listen;
  std::size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return "--listen must be HOST:PORT, got '" + s + "'";
  std::string host = s.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']') return "--listen: unbalanced brackets in '" + s + "'";
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return "--listen: put an IPv6 address in brackets, e.g. [::1]:8080";
  }
  std::string port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535) {
    return "--listen: invalid port in '" + s + "'";
  }
  c.listen_host = host;
  c.listen_port = std::stoi(port);
  return std::nullopt;
}

// "90s", "15m", "12h", "7d": 1 second to 90 days.
std::optional<std::chrono::seconds> parse_ttl(const std::string& text) {
  if (text.size() < 2 || text.size() > 8) return std::nullopt;
  const std::string digits = text.substr(0, text.size() - 1);
  if (!std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) return std::nullopt;
  long long unit = 0;
  switch (text.back()) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    default: return std::nullopt;
  }
  const long long seconds = std::stoll(digits) * unit;
  if (seconds < 1 || seconds > 90LL * 86400) return std::nullopt;
  return std::chrono::seconds(seconds);
}

std::optional<std::string> validate(Config& c) {
  if (auto problem = split_listen(c)) return problem;
  if (c.tokens_file.empty() && !is_loopback_host(c.listen_host)) {
    return "protected mode: refusing to listen on " + c.listen +
           " without --tokens-file; anyone who can reach it could send mail as you. Give --tokens-file, "
           "or listen on 127.0.0.1 / [::1]";
  }
  if (c.event_threads < 0 || c.event_threads > 256) return std::string("--event-threads must be between 0 and 256");
  if (c.max_batch < 1 || c.max_batch > 1000) return std::string("--max-batch must be between 1 and 1000");
  if (c.max_in_flight < 1 || c.max_in_flight > 65536) return std::string("--max-in-flight must be between 1 and 65536");
  if (c.max_connections < 0 || c.max_connections > 1048576) return std::string("--max-connections must be between 0 and 1048576");
  if (c.max_connections_per_ip < 0) return std::string("--max-connections-per-ip must be 0 (no limit) or more");
  if (c.max_body_bytes_in_flight < c.max_body_bytes) {
    return std::string("--max-body-bytes-in-flight must be at least --max-body-bytes");
  }
  if (c.attempt_timeout_ms < 1) return std::string("--attempt-timeout-ms must be at least 1");
  if (c.deadline_ms < 1) return std::string("--deadline-ms must be at least 1");
  if (c.max_retries < 0 || c.max_retries > 10) return std::string("--max-retries must be between 0 and 10");
  if (c.max_body_bytes < 1) return std::string("--max-body-bytes must be at least 1");
  if (c.audit_log_max_files < 0) return std::string("--audit-log-max-files must not be negative");
  if (c.providers.empty()) return std::string("--providers must name at least one provider");
  if (c.state_store_timeout_ms < 1 || c.state_store_timeout_ms > 10000) {
    return std::string("--state-store-timeout-ms must be between 1 and 10000");
  }
  if (!c.audit_stream.empty() && c.audit_stream != "redis") return std::string("--audit-stream must be redis");
  if (c.audit_stream == "redis" && c.state_store == "memory") {
    return std::string("--audit-stream redis needs --state-store redis://... or unix://...");
  }
  if (c.audit_stream_max_len < 1) return std::string("--audit-stream-max-len must be at least 1");
  if (auto ttl = parse_ttl(c.message_status_ttl)) {
    c.message_status_ttl_seconds = *ttl;
  } else {
    return "--message-status-ttl: '" + c.message_status_ttl + "' is not <n>s, <n>m, <n>h or <n>d between 1s and 90d";
  }
  std::set<std::string> seen;
  for (const auto& p : c.providers) {
    if (!find_provider(p)) return "--providers: unknown provider '" + p + "' (known: " + provider_names() + ")";
    if (!seen.insert(p).second) return "--providers names '" + p + "' twice";
  }
  return std::nullopt;
}

// The lines of a config file, to say where an option is (CLI11's items carry no line numbers).
std::vector<std::string> option_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The option a config line sets (dashes for underscores); "" for none.
std::string key_of(const std::string& line) {
  std::string key = std::string(trim_space(line));
  if (key.empty() || key.front() == '#' || key.front() == ';') return "";
  key = key.substr(0, key.find_first_of(" \t="));
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

// The 1-based line that sets `name` (dashes or underscores), or 0.
int line_of(const std::vector<std::string>& lines, const std::string& name) {
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (key_of(lines[i]) == name) return static_cast<int>(i) + 1;
  }
  return 0;
}

// What CLI11's reader lets through silently, read from the lines themselves: a section header
// anywhere (even last) and an option set twice (adjacent lines it would join with a comma).
std::optional<ConfigExit> check_lines(const std::vector<std::string>& lines, const std::string& config_file) {
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string where = "--config " + config_file + " line " + std::to_string(i + 1) + ": ";
    const std::string_view text = trim_space(lines[i]);
    if (!text.empty() && text.front() == '[') {
      return ConfigExit{2, where + "sections are not supported ('" + std::string(text) + "'): every option is top-level"};
    }
    const std::string key = key_of(lines[i]);
    if (key.empty()) continue;
    if (auto [it, fresh] = seen.emplace(key, i + 1); !fresh) {
      return ConfigExit{2, where + "'" + key + "' is already set on line " + std::to_string(it->second)};
    }
  }
  return std::nullopt;
}

// What an option takes, for a value CLI11 could not convert.
std::string value_kind(const std::string& name) {
  if (name == "failover-on-timeout") return "true or false";
  return "a whole number";
}

// Where option `name` got its value, as a message prefix: "MAILRELAY_X: " from the environment,
// "--config FILE line N: " from the file, "" from a flag (or when it is not known).
std::string origin(const std::string& name, const std::vector<std::string>& args,
                   const std::map<std::string, int>& file_lines, const std::string& config_file) {
  if (std::any_of(args.begin(), args.end(), [&](const std::string& a) { return a.rfind("--" + name, 0) == 0; })) return "";
  if (std::getenv(env_name(name).c_str())) return env_name(name) + ": ";
  auto line = file_lines.find(name);
  return line == file_lines.end() ? "" : "--config " + config_file + " line " + std::to_string(line->second) + ": ";
}

// CLI11's "Could not convert: --max-in-flight = lots" as which option, which value, and where it
// came from; other exits unchanged.
ConfigExit explained(ConfigExit exit, const std::vector<std::string>& args, const std::map<std::string, int>& file_lines,
                     const std::string& config_file) {
  const std::string prefix = "Could not convert: --";
  const std::size_t eq = exit.text.find(" = ");
  if (exit.text.rfind(prefix, 0) != 0 || eq == std::string::npos) return exit;
  const std::string name = exit.text.substr(prefix.size(), eq - prefix.size());
  const std::string value = exit.text.substr(eq + 3);
  exit.text = origin(name, args, file_lines, config_file) + "--" + name + ": '" + value + "' is not a valid value (" +
              value_kind(name) + ")";
  return exit;
}

// MAILRELAY_* variables that name no option (a misspelt one would otherwise be ignored silently).
std::vector<std::string> unknown_environment(const CLI::App& app) {
  std::set<std::string> known{"MAILRELAY_STATE_STORE_PASSWORD", "MAILRELAY_EVENTS_FORWARD_KEY"};
  for (const CLI::Option* o : app.get_options()) known.insert(o->get_envname());
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    const std::string var(*e);
    const std::string name = var.substr(0, var.find('='));
    if (name.rfind(kEnvPrefix, 0) == 0 && !known.count(name)) {
      out.push_back("the environment variable " + name + " names no option; it is ignored");
    }
  }
  return out;
}

// Parses `args` into `app`: nullopt to go on, or how to exit (help: 0, usage error: 2).
std::optional<ConfigExit> parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 consumes the vector from the back
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    return ConfigExit{0, app.help()};
  } catch (const CLI::ParseError& e) {
    return ConfigExit{2, e.what()};
  }
  return std::nullopt;
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  // An IP literal only: "127.attacker.example" is a name anyone can point anywhere.
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return host == "localhost" || host == "::1";
}

namespace {

// The --config file's entries as flags, for those that no flag or variable set (`probe` parsed
// those); `file_lines` gets each option's line for messages.
std::optional<ConfigExit> file_options(const CLI::App& probe, const std::string& path, std::vector<std::string>& merged,
                                       std::map<std::string, int>& file_lines) {
  const std::string& config_file = path;
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(config_file);
  } catch (const CLI::Error& e) {
    return ConfigExit{2, "cannot read --config " + config_file + ": " + e.what()};
  }
  const std::vector<std::string> lines = option_lines(config_file);
  if (auto exit = check_lines(lines, config_file)) return exit;
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers (none: check_lines)
    std::string name = item.name;
    std::replace(name.begin(), name.end(), '_', '-');
    const int line = line_of(lines, name);
    const std::string where = "--config " + config_file + " line " + std::to_string(line) + ": ";
    const CLI::Option* option = probe.get_option_no_throw("--" + name);
    if (!option || name == "config") return ConfigExit{2, where + "unknown option '" + item.name + "'"};
    file_lines[name] = line;
    if (option->count() > 0) continue;  // set by a flag or the environment: they win
    std::string joined;
    for (const auto& input : item.inputs) joined += (joined.empty() ? "" : ",") + input;
    merged.push_back("--" + name + "=" + joined);
  }
  return std::nullopt;
}

// The recipient key, the state store's password, the forwarding key and each provider's webhook
// secret (optional: its endpoint is off without it).
std::optional<ConfigExit> load_secrets(Config& config) {
  if (auto key = load_recipient_key(config.audit_recipient_key_file); !key) {
    return key.error();
  } else {
    config.audit_recipient_key = std::move(key).value();
  }
  if (config.state_store != "memory") {
    if (auto address = parse_redis_url(config.state_store); !address) return ConfigExit{2, address.error().message};
    const ProviderSecret secret{"password", "password", "MAILRELAY_STATE_STORE_PASSWORD", "state_store_password", false};
    auto password = load_secret("state store", secret, config.state_store_password_file, "state-store-password-file");
    if (!password) return password.error();
    config.state_store_password = std::move(password).value();
  }
  const ProviderSecret forward_key{"forward-key", "forward key", "MAILRELAY_EVENTS_FORWARD_KEY", "events_forward_key", false};
  auto forward = load_secret("events", forward_key, config.events_forward_key_file, "events-forward-key-file");
  if (!forward) return forward.error();
  config.events_forward_key = std::move(forward).value();
  // Each provider's webhook secret: optional, its endpoint off without it.
  for (const auto* p : provider_registry()) {
    if (!p->webhook) continue;
    const std::string flag = p->name + "-" + p->webhook->secret.key + "-file";
    auto value = load_secret(p->name, p->webhook->secret, config.provider_flags.at(flag), flag);
    if (!value) return value.error();
    if (value.value().empty()) continue;
    if (p->webhook->check) {
      if (auto problem = p->webhook->check(value.value())) return ConfigExit{2, *problem};
    }
    config.webhook_secrets[p->name] = std::move(value).value();
  }
  return std::nullopt;
}

std::optional<ConfigExit> check_events(const Config& config) {
  if (!config.events_forward_url.empty()) {
    if (auto problem = check_base_url("events-forward-url", config.events_forward_url)) return ConfigExit{2, *problem};
    if (config.events_forward_key.size() < 16) {
      return ConfigExit{2, "--events-forward-url needs a key of 16 bytes or more: --events-forward-key-file, "
                           "MAILRELAY_EVENTS_FORWARD_KEY or the credential events_forward_key"};
    }
  }
  return std::nullopt;
}

std::optional<ConfigExit> parse_rates_and_strategy(Config& config) {
  auto rates = parse_rate_limits(config.rate_limits);
  if (!rates) return ConfigExit{2, rates.error().message};
  config.client_rates = std::move(rates).value();
  if (config.strategy != "failover" && config.strategy != "round-robin" && config.strategy != "weighted" &&
      config.strategy != "adaptive") {
    return ConfigExit{2, "--strategy must be failover, round-robin, weighted or adaptive, got '" + config.strategy + "'"};
  }
  config.provider_weights.assign(config.providers.size(), 1.0);
  std::stringstream weights(config.weights);
  for (std::string item; std::getline(weights, item, ',');) {
    auto eq = item.find('=');
    auto at = eq == std::string::npos ? config.providers.end()
                                       : std::find(config.providers.begin(), config.providers.end(), item.substr(0, eq));
    char* end = nullptr;
    double w = eq == std::string::npos ? -1 : std::strtod(item.c_str() + eq + 1, &end);
    if (at == config.providers.end() || w < 0 || !end || *end != '\0') {
      return ConfigExit{2, "--weights: '" + item + "' is not provider=weight for a provider in --providers"};
    }
    config.provider_weights[static_cast<std::size_t>(at - config.providers.begin())] = w;
  }
  if (std::all_of(config.provider_weights.begin(), config.provider_weights.end(), [](double w) { return w == 0; })) {
    return ConfigExit{2, "--weights: at least one provider needs a weight above 0"};
  }
  return std::nullopt;
}

// Each listed provider must be usable, checked in the order given so the first problem an
// operator sees is about the first provider.
std::optional<ConfigExit> load_providers(Config& config) {
  for (const auto& name : config.providers) {
    const ProviderDescriptor& d = *find_provider(name);
    ProviderConfig pc{name, {}, {}};
    for (const auto& o : d.options) {
      const std::string flag = name + "-" + o.key;
      pc.options[o.key] = config.provider_flags.at(flag);
      const std::string suffix = "base-url";
      const bool computed = pc.options[o.key].empty() && o.default_value.empty();  // the provider derives it
      if (!computed && o.key.size() >= suffix.size() &&
          o.key.compare(o.key.size() - suffix.size(), suffix.size(), suffix) == 0) {
        if (auto problem = check_base_url(flag, pc.options[o.key])) return ConfigExit{2, *problem};
      }
    }
    if (d.check) {
      if (auto problem = d.check(pc)) return ConfigExit{2, *problem};
    }
    for (const auto& secret : d.secrets) {
      const std::string flag = name + "-" + secret.key + "-file";
      auto value = load_secret(name, secret, config.provider_flags.at(flag), flag);
      if (!value) return value.error();
      if (!value.value().empty()) pc.secrets[secret.key] = std::move(value).value();
    }
    config.provider_configs[name] = std::move(pc);
  }
  return std::nullopt;
}

}  // namespace

Result<Config, ConfigExit> load_config(const std::vector<std::string>& args) {
  // CLI11 applies a config file before the environment, so the file would beat the environment.
  // The contract is flags > environment > file. So: parse flags and environment once to learn
  // what they set, turn the file's remaining entries into flags, and parse everything again.
  Config first;
  CLI::App probe("mailrelayd");
  declare_options(probe, first);
  if (auto exit = parse(probe, args)) return explained(*exit, args, {}, "");
  std::vector<std::string> merged;
  std::map<std::string, int> file_lines;  // option -> its line in --config, for messages
  if (!first.config_file.empty()) {
    if (auto exit = file_options(probe, first.config_file, merged, file_lines)) return *exit;
  }
  merged.insert(merged.end(), args.begin(), args.end());

  Config config;
  CLI::App app("mailrelayd");
  declare_options(app, config);
  if (auto exit = parse(app, merged)) return explained(*exit, args, file_lines, first.config_file);
  config.warnings = unknown_environment(app);
  // Under the unit the tokens file is the credential `tokens` (changed by a restart, not a reload).
  if (config.tokens_file.empty()) config.tokens_file = credential_path("tokens");
  // "--strategy must be ..." about a value from --config: say on which line.
  auto located = [&](ConfigExit exit) {
    const std::string& text = exit.text;
    const std::string name = text.rfind("--", 0) == 0 ? text.substr(2, text.find_first_of(" :", 2) - 2) : "";
    const std::string where = name.empty() ? "" : origin(name, args, file_lines, first.config_file);
    if (where.rfind("--config", 0) == 0) exit.text = where + text;
    return exit;
  };
  if (auto problem = validate(config)) return located(ConfigExit{2, *problem});
  std::optional<ConfigExit> exit;
  if ((exit = load_secrets(config)) || (exit = check_events(config)) || (exit = parse_rates_and_strategy(config)) ||
      (exit = load_providers(config))) {
    return located(*exit);
  }
  return config;
}

Result<std::map<std::string, RateLimit>> parse_rate_limits(const std::string& text) {
  std::map<std::string, RateLimit> out;
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    item = std::string(trim_space(item));
    if (item.empty()) continue;
    const auto eq = item.find('='), slash = item.rfind('/');
    const std::string bad = "--rate-limits: '" + item + "' is not client=N/s, N/m or N/h";
    if (eq == std::string::npos || eq == 0 || slash == std::string::npos || slash < eq) return Error{"config", bad, ""};
    const std::string count = item.substr(eq + 1, slash - eq - 1), unit = item.substr(slash + 1);
    char* end = nullptr;
    RateLimit limit;
    limit.count = std::strtod(count.c_str(), &end);
    if (count.empty() || !end || *end != '\0' || !(limit.count > 0) || limit.count > 1e6) return Error{"config", bad, ""};
    if (unit == "s") limit.period = std::chrono::seconds(1);
    else if (unit == "m") limit.period = std::chrono::minutes(1);
    else if (unit == "h") limit.period = std::chrono::hours(1);
    else return Error{"config", bad, ""};
    if (!out.emplace(item.substr(0, eq), limit).second) {
      return Error{"config", "--rate-limits names '" + item.substr(0, eq) + "' twice", ""};
    }
  }
  return out;
}

Result<HashAddressCommand, ConfigExit> parse_hash_address(const std::vector<std::string>& args) {
  CLI::App app("mailrelayd hash-address: print the keyed hash the audit log writes for ADDRESS,\n"
               "so that `zgrep -F HASH audit.log*` answers \"did we send to this address?\"");
  std::string key_file, address;
  app.add_option("--audit-recipient-key-file", key_file,
                 "the daemon's recipient key file (default: the credential audit_recipient_key, as the unit has it)")
      ->envname("MAILRELAY_AUDIT_RECIPIENT_KEY_FILE");
  app.add_option("address", address, "the email address")->required();
  if (auto exit = parse(app, args)) return *exit;
  auto key = load_recipient_key(key_file);
  if (!key) return key.error();
  if (key.value().empty()) {
    return ConfigExit{2, "no recipient key: give --audit-recipient-key-file, or run as root where the unit's credential "
                         "/etc/credstore/mailrelay.audit_recipient_key is"};
  }
  // Only an addr-spec has a hash the audit log could hold: anything else would print a hash that
  // answers "never sent to" without a warning.
  auto parsed = parse_address(address, "ADDRESS");
  if (!parsed) {
    return ConfigExit{2, "hash-address: ADDRESS is not an email address (" + parsed.error().message +
                             "); give the addr-spec, such as alice@example.org"};
  }
  std::string note;
  if (parsed.value().email != address) {
    note = "hash-address: hashing the address inside the angle brackets; the display name is not part of it";
  }
  return HashAddressCommand{std::move(key).value(), parsed.value().email, note};
}

std::string comma_joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

}  // namespace mailrelay
