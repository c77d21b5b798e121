#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "config.h"
#include "test_helpers.h"
#include "test_keys.h"

using namespace mailrelay;

namespace {

// Sets an environment variable for one scope.
struct EnvVar {
  std::string name;
  EnvVar(std::string n, const std::string& value) : name(std::move(n)) { setenv(name.c_str(), value.c_str(), 1); }
  ~EnvVar() { unsetenv(name.c_str()); }
};

Result<Config, ConfigExit> load(std::vector<std::string> args) { return load_config(args); }

std::vector<std::string> outbox_args(const fakes::TempDir& dir) {
  return {"--providers", "outbox", "--outbox-dir", dir.file("out")};
}

// The outbox configuration and `more` options.
Result<Config, ConfigExit> load_outbox(const fakes::TempDir& dir, const std::vector<std::string>& more) {
  auto args = outbox_args(dir);
  args.insert(args.end(), more.begin(), more.end());
  return load(args);
}

}  // namespace

TEST_CASE("defaults follow the README's option table", "[config]") {
  fakes::TempDir dir;
  auto c = load(outbox_args(dir));
  REQUIRE(c);
  const Config& config = c.value();
  CHECK(config.listen_host == "127.0.0.1");
  CHECK(config.listen_port == 8080);
  CHECK(config.event_threads == 0);  // one per core
  CHECK(config.threads == -1);       // deprecated: not given
  CHECK(config.max_queue == -1);     // deprecated: not given
  CHECK(config.max_in_flight == 4096);
  CHECK(config.max_body_bytes_in_flight == 536870912);
  CHECK(config.attempt_timeout_ms == 3000);
  CHECK(config.deadline_ms == 10000);
  CHECK(config.max_retries == 1);
  CHECK(config.failover_on_timeout);
  CHECK(config.max_body_bytes == 10485760);
  CHECK(config.audit_log == "-");
  CHECK(config.provider_flags.at("sendgrid-base-url") == "https://api.sendgrid.com");
  CHECK(config.provider_flags.at("mailgun-base-url") == "https://api.mailgun.net");
  CHECK(Config{}.providers == std::vector<std::string>{"sendgrid", "mailgun"});
}

TEST_CASE("flags win over environment, environment over the config file", "[config]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("mailrelay.conf"),
                    "# example\nlisten = \"127.0.0.1:7001\"\nevent-threads = 11\nmax_retries = 3\n"
                    "deadline-ms = 4000\nproviders = \"outbox\"\noutbox-dir = \"" + dir.file("out") + "\"\n");
  EnvVar threads("MAILRELAY_EVENT_THREADS", "22");
  EnvVar timeout("MAILRELAY_ATTEMPT_TIMEOUT_MS", "1500");
  EnvVar retries("MAILRELAY_MAX_RETRIES", "2");
  auto c = load({"--config", dir.file("mailrelay.conf"), "--event-threads", "33"});
  REQUIRE(c);
  CHECK(c.value().event_threads == 33);         // flag beats env and file
  CHECK(c.value().max_retries == 2);            // env beats file
  CHECK(c.value().attempt_timeout_ms == 1500);  // env alone
  CHECK(c.value().deadline_ms == 4000);         // file alone
  CHECK(c.value().listen_port == 7001);
  CHECK(c.value().providers == std::vector<std::string>{"outbox"});
}

TEST_CASE("bad command lines and config files exit 2 with a message", "[config]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("unknown.conf"), "no_such_option = 1\n");
  auto [args, message] = GENERATE_REF(table<std::vector<std::string>, std::string>({
      {{"--no-such-flag"}, "no-such-flag"},
      {{"--event-threads", "many"}, "event-threads"},
      {{"--event-threads", "999", "--providers", "outbox", "--outbox-dir", "/tmp/x"}, "--event-threads must be between 0 and 256"},
      {{"--providers", "sendgrid,pigeon"}, "unknown provider 'pigeon'"},
      {{"--providers", "outbox,outbox", "--outbox-dir", "/tmp/x"}, "twice"},
      {{"--providers", "outbox"}, "--outbox-dir is not set"},
      {{"--listen", "8080", "--providers", "outbox", "--outbox-dir", "/tmp/x"}, "HOST:PORT"},
      {{"--listen", "::1:8080", "--providers", "outbox", "--outbox-dir", "/tmp/x"}, "brackets"},
      {{"--listen", "0.0.0.0:8080", "--providers", "outbox", "--outbox-dir", "/tmp/x"}, "protected mode"},
      // A name that starts like a loopback address is not one (README "Hostile input").
      {{"--listen", "127.attacker.example:8080", "--providers", "outbox", "--outbox-dir", "/tmp/x"}, "protected mode"},
      {{"--config", "/nonexistent.conf"}, "nonexistent"},
  }));
  CAPTURE(args);
  auto c = load(args);
  REQUIRE_FALSE(c);
  CHECK(c.error().code == 2);
  CHECK_THAT(c.error().text, Catch::Contains(message));
}

TEST_CASE("unknown keys in the config file are errors", "[config]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("c.conf"), "no_such_option = 1\n");
  auto c = load({"--config", dir.file("c.conf")});
  REQUIRE_FALSE(c);
  CHECK(c.error().code == 2);
  CHECK_THAT(c.error().text, Catch::Contains("unknown option 'no_such_option'"));
}

TEST_CASE("a listed provider without credentials is a start-up error", "[config]") {
  unsetenv("SENDGRID_API_KEY");
  unsetenv("MAILGUN_API_KEY");
  unsetenv("CREDENTIALS_DIRECTORY");
  auto c = load({});
  REQUIRE_FALSE(c);
  CHECK(c.error().code == 2);
  CHECK_THAT(c.error().text, Catch::Contains("provider 'sendgrid'") && Catch::Contains("no API key"));

  EnvVar key("SENDGRID_API_KEY", "SG.fake-env");
  auto mailgun = load({});
  REQUIRE_FALSE(mailgun);
  CHECK_THAT(mailgun.error().text, Catch::Contains("--mailgun-domain"));
}

TEST_CASE("postmark: its server token from POSTMARK_SERVER_TOKEN or the credential postmark_server_token", "[config][postmark]") {
  unsetenv("POSTMARK_SERVER_TOKEN");
  unsetenv("CREDENTIALS_DIRECTORY");
  auto none = load({"--providers", "postmark"});
  REQUIRE_FALSE(none);
  CHECK_THAT(none.error().text, Catch::Contains("no server token") && Catch::Contains("POSTMARK_SERVER_TOKEN") &&
                                    Catch::Contains("--postmark-api-key-file") && Catch::Contains("postmark_server_token"));
  fakes::TempDir dir;
  fakes::write_file(dir.file("postmark_server_token"), "pm-fake-from-credentials\n");
  EnvVar creds("CREDENTIALS_DIRECTORY", dir.path());
  auto c = load({"--providers", "postmark", "--postmark-message-stream", "billing"});
  REQUIRE(c);
  const ProviderConfig& pm = c.value().provider_configs.at("postmark");
  CHECK(pm.secret("api-key") == "pm-fake-from-credentials");
  CHECK(pm.option("message-stream") == "billing");
  CHECK(pm.option("base-url") == "https://api.postmarkapp.com");
  EnvVar env("POSTMARK_SERVER_TOKEN", "pm-fake-from-env");
  CHECK(load({"--providers", "postmark"}).value().provider_configs.at("postmark").secret("api-key") == "pm-fake-from-env");
}

TEST_CASE("ses: a region and the AWS key pair, the session token optional", "[config][ses]") {
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  unsetenv("AWS_SESSION_TOKEN");
  unsetenv("CREDENTIALS_DIRECTORY");
  auto no_region = load({"--providers", "ses"});
  REQUIRE_FALSE(no_region);
  CHECK_THAT(no_region.error().text, Catch::Contains("--ses-region"));
  auto no_key = load({"--providers", "ses", "--ses-region", "eu-west-1"});
  REQUIRE_FALSE(no_key);
  CHECK_THAT(no_key.error().text, Catch::Contains("AWS_ACCESS_KEY_ID") && Catch::Contains("aws_access_key_id"));
  EnvVar id("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE");
  EnvVar secret("AWS_SECRET_ACCESS_KEY", "fake-secret");
  auto c = load({"--providers", "ses", "--ses-region", "eu-west-1"});
  REQUIRE(c);
  const ProviderConfig& ses = c.value().provider_configs.at("ses");
  CHECK(ses.secret("access-key-id") == "AKIAFAKEFAKEFAKEFAKE");
  CHECK(ses.secret("session-token").empty());
  CHECK(ses.option("base-url").empty());  // derived from the region
  CHECK_FALSE(load({"--providers", "ses", "--ses-region", "EU West"}));
  CHECK_FALSE(load({"--providers", "ses", "--ses-region", "eu-west-1", "--ses-base-url", "http://example.com"}));
}

TEST_CASE("API keys come from a file, the environment or systemd credentials", "[config]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("sg.key"), "SG.fake-from-file\n");
  fakes::write_file(dir.file("mailgun_api_key"), "fake-mailgun-from-credentials\n");
  EnvVar creds("CREDENTIALS_DIRECTORY", dir.path());
  EnvVar env_key("SENDGRID_API_KEY", "SG.fake-from-env");
  SECTION("file beats environment; credentials directory is the fallback") {
    auto c = load({"--sendgrid-api-key-file", dir.file("sg.key"), "--mailgun-domain", "mg.example.com"});
    REQUIRE(c);
    CHECK(c.value().provider_configs.at("sendgrid").secret("api-key") == "SG.fake-from-file");
    CHECK(c.value().provider_configs.at("mailgun").secret("api-key") == "fake-mailgun-from-credentials");
  }
  SECTION("environment beats credentials directory") {
    auto c = load({"--mailgun-domain", "mg.example.com"});
    REQUIRE(c);
    CHECK(c.value().provider_configs.at("sendgrid").secret("api-key") == "SG.fake-from-env");
  }
  SECTION("an unreadable key file is an error naming the file, not the key") {
    auto c = load({"--sendgrid-api-key-file", dir.file("missing.key"), "--mailgun-domain", "mg.example.com"});
    REQUIRE_FALSE(c);
    CHECK_THAT(c.error().text, Catch::Contains("missing.key"));
  }
}

TEST_CASE("base URLs must be https unless the host is loopback", "[config]") {
  EnvVar key("SENDGRID_API_KEY", "SG.fake");
  auto [url, ok] = GENERATE(table<std::string, bool>({
      {"https://api.eu.sendgrid.com", true}, {"http://127.0.0.1:9000", true}, {"http://[::1]:9000", true},
      {"http://localhost:9000", true}, {"http://api.sendgrid.com", false}, {"ftp://x.example.com", false},
      {"not a url", false}, {"http://127.attacker.example:9000", false}, {"http://127.0.0.1.nip.io", false},
      {"http://127.255.0.9:9000", true}, {"http://[::ffff:127.0.0.1]:9000", false}}));
  CAPTURE(url);
  auto c = load({"--providers", "sendgrid", "--sendgrid-base-url", url});
  CHECK(c.ok() == ok);
  if (!ok) CHECK_THAT(c.error().text, Catch::Contains("sendgrid-base-url"));
}

TEST_CASE("help documents every option and no secret", "[config]") {
  EnvVar key("SENDGRID_API_KEY", "SG.fake-secret-in-env");
  auto c = load({"--help"});
  REQUIRE_FALSE(c);
  CHECK(c.error().code == 0);
  for (const char* option : {"--listen", "--event-threads", "--threads", "--max-queue", "--max-in-flight", "--max-body-bytes-in-flight", "--providers", "--sendgrid-base-url",
                             "--sendgrid-api-key-file", "--mailgun-base-url", "--mailgun-domain",
                             "--mailgun-api-key-file", "--outbox-dir", "--attempt-timeout-ms", "--deadline-ms",
                             "--max-retries", "--failover-on-timeout", "--max-body-bytes", "--tokens-file",
                             "--audit-log", "--audit-log-max-bytes", "--audit-log-max-files", "--ca-file", "--config"}) {
    CHECK_THAT(c.error().text, Catch::Contains(option));
  }
  CHECK_THAT(c.error().text, !Catch::Contains("SG.fake-secret-in-env"));
}

TEST_CASE("IPv6 listen address and --failover-on-timeout=false", "[config]") {
  fakes::TempDir dir;
  auto args = outbox_args(dir);
  args.insert(args.end(), {"--listen", "[::1]:9090", "--failover-on-timeout=false"});
  auto c = load(args);
  REQUIRE(c);
  CHECK(c.value().listen_host == "::1");
  CHECK(c.value().listen_port == 9090);
  CHECK_FALSE(c.value().failover_on_timeout);
}

TEST_CASE("the example config documents every option, and names no unknown one", "[config]") {
  std::string text = fakes::read_file(std::string(MAILRELAY_TEST_DIR) + "/../systemd/mailrelay.conf");
  std::set<std::string> documented;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t nl = text.find('\n', start);
    std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    start = nl == std::string::npos ? text.size() : nl + 1;
    if (!line.empty() && line[0] == '#') line.erase(0, 1);  // commented out, or set (audit-log-max-bytes)
    if (!line.empty() && std::islower(static_cast<unsigned char>(line[0])) && line.find(" = ") != std::string::npos) {
      documented.insert(line.substr(0, line.find(" = ")));
    }
  }
  auto help = load({"--help"});
  REQUIRE_FALSE(help);
  std::set<std::string> options;
  const std::string h = help.error().text.substr(0, help.error().text.find("Commands:"));  // options, not commands
  for (std::size_t at = h.find("--"); at != std::string::npos; at = h.find("--", at + 2)) {
    std::size_t end = h.find_first_not_of("abcdefghijklmnopqrstuvwxyz-", at + 2);
    options.insert(h.substr(at + 2, end - at - 2));
  }
  options.erase("help");
  options.erase("config");
  CHECK(documented == options);
}

TEST_CASE("strategy and weights", "[config]") {
  EnvVar sg("SENDGRID_API_KEY", "SG.fake");
  EnvVar mg("MAILGUN_API_KEY", "fake-mg");
  std::vector<std::string> base{"--mailgun-domain", "mg.example.com"};
  auto with = [&](std::vector<std::string> extra) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return load(args);
  };
  auto ok = with({"--strategy", "weighted", "--weights", "mailgun=3"});
  REQUIRE(ok);
  CHECK(ok.value().provider_weights == std::vector<double>{1, 3});
  CHECK(with({"--strategy", "round-robin"}));
  for (auto bad : std::vector<std::vector<std::string>>{{"--strategy", "random"},
                                                         {"--weights", "pigeon=1"},
                                                         {"--weights", "sendgrid"},
                                                         {"--weights", "sendgrid=-1"},
                                                         {"--weights", "sendgrid=0,mailgun=0"}}) {
    CAPTURE(bad);
    auto c = with(bad);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == 2);
  }
}

TEST_CASE("rate limits: per second, minute or hour by client, malformed lists are refused", "[config][rate]") {
  auto rates = parse_rate_limits("billing=20/s, signup=300/m,*=50/s,batch=3600/h");
  REQUIRE(rates);
  CHECK(rates.value().size() == 4);
  CHECK(rates.value().at("billing").emission() == std::chrono::microseconds(50000));
  CHECK(rates.value().at("signup").emission() == std::chrono::microseconds(200000));
  CHECK(rates.value().at("batch").emission() == std::chrono::microseconds(1000000));
  CHECK(rates.value().at("*").count == 50);
  CHECK(parse_rate_limits("").value().empty());
  for (const char* bad : {"billing", "billing=20", "billing=20/d", "billing=0/s", "billing=-1/s", "=5/s",
                          "billing=x/s", "billing=1/s,billing=2/s"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_rate_limits(bad));
  }
}

TEST_CASE("state store options: URL, password from file, environment or credential, never the URL", "[config][state_store]") {
  fakes::TempDir dir;
  auto with = [&](const std::vector<std::string>& more) { return load_outbox(dir, more); };
  CHECK(with({}).value().state_store == "memory");
  CHECK_FALSE(with({"--state-store", "redis://ops:secret@127.0.0.1:6379"}));
  CHECK_FALSE(with({"--state-store", "mongodb://x"}));
  CHECK_FALSE(with({"--audit-stream", "redis"}));  // needs a Redis store
  CHECK_FALSE(with({"--audit-stream", "kafka", "--state-store", "redis://127.0.0.1:6379"}));
  CHECK_FALSE(with({"--state-store-timeout-ms", "0"}));
  fakes::write_file(dir.file("redis_password"), "fake-redis-password\n");
  auto from_file = with({"--state-store", "redis://127.0.0.1:6379", "--state-store-password-file", dir.file("redis_password")});
  REQUIRE(from_file);
  CHECK(from_file.value().state_store_password == "fake-redis-password");
  {
    EnvVar env("MAILRELAY_STATE_STORE_PASSWORD", "fake-from-env");
    CHECK(with({"--state-store", "redis://127.0.0.1:6379"}).value().state_store_password == "fake-from-env");
  }
  fakes::write_file(dir.file("state_store_password"), "fake-from-credential\n");
  EnvVar creds("CREDENTIALS_DIRECTORY", dir.path());
  CHECK(with({"--state-store", "unix:///run/redis/redis.sock"}).value().state_store_password == "fake-from-credential");
  CHECK_FALSE(with({"--rate-limits", "billing=fast"}));
}

TEST_CASE("webhook keys and forwarding: from a file, the environment or a credential, checked at start-up",
          "[config][events]") {
  fakes::TempDir dir;
  auto with = [&](const std::vector<std::string>& more) { return load_outbox(dir, more); };
  auto plain = with({});
  REQUIRE(plain);
  CHECK(plain.value().webhook_secrets.empty());
  fakes::EcKey key;
  fakes::write_file(dir.file("sg_key"), key.public_base64() + "\n");
  auto sendgrid = with({"--sendgrid-webhook-public-key-file", dir.file("sg_key")});
  REQUIRE(sendgrid);
  CHECK(sendgrid.value().webhook_secrets.at("sendgrid") == key.public_base64());
  // A PEM file, or anything that is not a P-256 key, is refused with a message.
  fakes::write_file(dir.file("pem"), "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n");
  auto pem = with({"--sendgrid-webhook-public-key-file", dir.file("pem")});
  REQUIRE_FALSE(pem);
  CHECK(pem.error().code == 2);
  CHECK(pem.error().text.find("SendGrid webhook public key") != std::string::npos);
  {
    EnvVar env("MAILGUN_WEBHOOK_SIGNING_KEY", "fake-signing-key-from-env");
    CHECK(with({}).value().webhook_secrets.at("mailgun") == "fake-signing-key-from-env");
  }
  CHECK_FALSE(with({"--postmark-webhook-credentials-file", dir.file("sg_key")}));  // no user:password
  fakes::write_file(dir.file("postmark_webhook_credentials"), "postmark:fake-password\n");
  fakes::write_file(dir.file("events_forward_key"), "fake-forward-key-0123456789\n");
  {
    EnvVar creds("CREDENTIALS_DIRECTORY", dir.path());
    auto c = with({"--events-forward-url", "http://127.0.0.1:9000/events"});
    REQUIRE(c);
    CHECK(c.value().webhook_secrets.at("postmark") == "postmark:fake-password");
    CHECK(c.value().events_forward_key == "fake-forward-key-0123456789");
    CHECK_FALSE(with({"--events-forward-url", "http://app.internal/events"}));  // plain http off loopback
  }
  auto no_key = with({"--events-forward-url", "https://app.internal/events"});
  REQUIRE_FALSE(no_key);
  CHECK(no_key.error().text.find("events-forward-key") != std::string::npos);
}

TEST_CASE("the unit's credentials: tokens and the recipient key too, and by hand from the credential store's names",
          "[config]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("tokens"), "billing:fake-token-0123456789abcdef\n");
  fakes::write_file(dir.file("audit_recipient_key"), "fake-recipient-key-0123456789\n");
  {
    EnvVar creds("CREDENTIALS_DIRECTORY", dir.path());
    auto c = load_outbox(dir, {});
    REQUIRE(c);
    CHECK(c.value().tokens_file == dir.file("tokens"));
    CHECK(c.value().audit_recipient_key == "fake-recipient-key-0123456789");
    // A flag still wins over the credential.
    fakes::write_file(dir.file("other_tokens"), "signup:fake-token-abcdef0123456789\n");
    CHECK(load_outbox(dir, {"--tokens-file", dir.file("other_tokens")}).value().tokens_file == dir.file("other_tokens"));
    auto hashed = parse_hash_address({"alice@example.org"});
    REQUIRE(hashed);
    CHECK(hashed.value().key == "fake-recipient-key-0123456789");
  }
  fakes::TempDir empty;
  EnvVar creds("CREDENTIALS_DIRECTORY", empty.path());
  auto c = load_outbox(dir, {});
  REQUIRE(c);
  CHECK(c.value().tokens_file.empty());
  CHECK(c.value().audit_recipient_key.empty());
  // hash-address without a key is an error, never an empty hash that matches every line.
  auto no_key = parse_hash_address({"alice@example.org"});
  REQUIRE_FALSE(no_key);
  CHECK(no_key.error().code == 2);
  CHECK_THAT(no_key.error().text, Catch::Contains("no recipient key"));
}

TEST_CASE("a secret file that cannot be read: the reason and the option it came from", "[config]") {
  fakes::TempDir dir;
  unsetenv("CREDENTIALS_DIRECTORY");
  auto c = load_outbox(dir, {"--audit-recipient-key-file", dir.file("missing")});
  REQUIRE_FALSE(c);
  CHECK_THAT(c.error().text, Catch::Contains("No such file or directory"));
  CHECK_THAT(c.error().text, Catch::Contains("--audit-recipient-key-file"));
  auto key = load({"--providers", "sendgrid", "--sendgrid-api-key-file", dir.file("missing")});
  REQUIRE_FALSE(key);
  CHECK_THAT(key.error().text, Catch::Contains("(--sendgrid-api-key-file): No such file or directory"));
}

TEST_CASE("config file mistakes name their line, a value given twice and unknown variables are not silent", "[config]") {
  fakes::TempDir dir;
  auto with_file = [&](const std::string& text) {
    fakes::write_file(dir.file("c.conf"), text);
    return load_outbox(dir, {"--config", dir.file("c.conf")});
  };
  auto typed = with_file("listen = \"127.0.0.1:8080\"\n\nmax-in-flight = lots\n");
  REQUIRE_FALSE(typed);
  CHECK(typed.error().text == "--config " + dir.file("c.conf") + " line 3: --max-in-flight: 'lots' is not a valid value (a whole number)");
  auto twice = with_file("max-retries = 2\n# a comment\nmax_retries = 3\n");
  REQUIRE_FALSE(twice);
  CHECK(twice.error().text == "--config " + dir.file("c.conf") + " line 3: 'max-retries' is already set on line 1");
  auto unknown = with_file("max-retries = 2\nmax-inflight = 3\n");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().text == "--config " + dir.file("c.conf") + " line 2: unknown option 'max-inflight'");
  auto range = with_file("max-retries = 20\n");
  REQUIRE_FALSE(range);
  CHECK(range.error().text == "--config " + dir.file("c.conf") + " line 1: --max-retries must be between 0 and 10");
  {
    EnvVar bad("MAILRELAY_MAX_IN_FLIGHT", "many");
    auto env = load_outbox(dir, {});
    REQUIRE_FALSE(env);
    CHECK(env.error().text == "MAILRELAY_MAX_IN_FLIGHT: --max-in-flight: 'many' is not a valid value (a whole number)");
  }
  EnvVar typo("MAILRELAY_MAX_INFLIGHT", "3");
  auto c = load_outbox(dir, {});
  REQUIRE(c);
  CHECK(std::count(c.value().warnings.begin(), c.value().warnings.end(),
                   "the environment variable MAILRELAY_MAX_INFLIGHT names no option; it is ignored") == 1);
}

TEST_CASE("--help names the program, every provider and the commands", "[config]") {
  auto help = load({"--help"});
  REQUIRE_FALSE(help);
  CHECK(help.error().code == 0);
  CHECK_THAT(help.error().text, Catch::Contains("Usage: mailrelayd [OPTIONS]"));
  CHECK_THAT(help.error().text, !Catch::Contains("SendGrid, then Mailgun"));
  for (const char* command : {"mailrelayd check-config", "mailrelayd hash-address", "mailrelayd reload --pid"}) {
    CHECK_THAT(help.error().text, Catch::Contains(command));
  }
}
