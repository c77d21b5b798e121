// Config: every start-up option (README "Configuration for real providers") as a plain struct, and load_config(), which
// reads flags, MAILRELAY_* environment and --config file (flags win over environment, environment
// over file), loads secrets, and validates once. Plain data; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "provider_registry.h"
#include "result.h"
#include "state_store.h"

namespace mailrelay {

struct Config {
  std::string config_file;
  std::vector<std::string> warnings;  // logged at start and by check-config (an unknown MAILRELAY_* variable)
  std::string listen = "127.0.0.1:8080";
  std::string listen_host;  // derived from listen
  int listen_port = 0;      // derived from listen; 0 = any free port
  int event_threads = 0;       // event loops; 0: one per core
  int threads = -1;            // deprecated, ignored (-1: not given)
  int max_queue = -1;          // deprecated, ignored (-1: not given)
  int max_batch = 100;         // messages in one POST /v1/send/batch
  int max_in_flight = 4096;    // sends handled at once; beyond: 503 overloaded
  std::uint64_t max_body_bytes_in_flight = 536870912;  // request bodies in memory; beyond: 503
  int max_connections = 0;           // open client connections; 0: half the descriptor limit (64 to 65536)
  int max_connections_per_ip = 256;  // open connections from one client address; 0: no limit
  std::vector<std::string> providers{"sendgrid", "mailgun"};
  // Every registered provider's options as given, by flag name ("sendgrid-base-url",
  // "sendgrid-api-key-file"), defaults filled in.
  std::map<std::string, std::string> provider_flags;
  // The listed providers' settings, secrets loaded (never logged), by provider name.
  std::map<std::string, ProviderConfig> provider_configs;
  std::string strategy = "failover";  // failover, round-robin, weighted
  std::string weights;                // "sendgrid=3,mailgun=1"; unlisted providers weigh 1
  std::vector<double> provider_weights;  // derived: one per provider, in order
  int attempt_timeout_ms = 3000;
  int deadline_ms = 10000;
  int max_retries = 1;
  bool failover_on_timeout = true;
  std::uint64_t max_body_bytes = 10485760;
  std::string tokens_file;
  std::string audit_log = "-";
  std::uint64_t audit_log_max_bytes = 104857600;
  int audit_log_max_files = 10;
  std::string audit_recipient_key_file;
  std::string audit_recipient_key;  // secret: never logged
  std::string ca_file;
  std::string proxy;
  // README "Running several instances": where the fleet's shared state lives.
  std::string state_store = "memory";  // memory, redis://[user@]host:port[/db], unix:///path
  std::string state_store_password_file;
  std::string state_store_password;    // secret: never logged
  std::string state_store_prefix = "mailrelay:";
  int state_store_timeout_ms = 50;
  std::string audit_stream;            // "" or "redis"
  std::uint64_t audit_stream_max_len = 1000000;
  // README "Message status": how long GET /v1/messages/{request_id} knows a message.
  std::string message_status_ttl = "7d";  // <n>s, <n>m, <n>h or <n>d
  std::chrono::seconds message_status_ttl_seconds{7 * 24 * 3600};  // derived
  // README "Other endpoints": "billing=20/s,signup=300/m,*=50/s".
  std::string rate_limits;
  std::map<std::string, RateLimit> client_rates;  // derived: by client name, "*" for the others
  // README "Delivery events and suppressions": provider webhooks and where their events go.
  std::map<std::string, std::string> webhook_secrets;  // by provider (secret: never logged); none = its endpoint is 404
  std::string events_forward_url;
  std::string events_forward_key_file;
  std::string events_forward_key;           // secret: never logged
};

// `billing=20/s,signup=300/m,*=50/s` (per second, minute or hour) by client name.
Result<std::map<std::string, RateLimit>> parse_rate_limits(const std::string& text);

// Why the process should exit instead of running: --help (code 0, text on stdout) or a usage or
// configuration error (code 2, message on stderr).
struct ConfigExit {
  int code = 2;
  std::string text;
};

// `args` excludes argv[0]. Reads the environment through getenv.
Result<Config, ConfigExit> load_config(const std::vector<std::string>& args);

// `mailrelayd hash-address [--audit-recipient-key-file PATH] ADDRESS`: what it needs.
struct HashAddressCommand {
  std::string key;
  std::string address;  // the addr-spec
  std::string note;     // for stderr: what was hashed, when it is not ADDRESS as given
};
// `args` excludes argv[0] and the word "hash-address".
Result<HashAddressCommand, ConfigExit> parse_hash_address(const std::vector<std::string>& args);

// "a,b,c": lists of names as the options take them (--providers) and as the logs show them.
std::string comma_joined(const std::vector<std::string>& items);

// True for 127.0.0.0/8, ::1 and localhost.
bool is_loopback_host(const std::string& host);

}  // namespace mailrelay
