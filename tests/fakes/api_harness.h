// ApiHarness: the real HTTP API, relay, providers and transport in-process behind a FrontDoor on
// 127.0.0.1:0, against fake SendGrid and Mailgun servers on loopback. For the API and front door
// tests; one per test case.
#pragma once

#include <curl/curl.h>
#include <spdlog/sinks/ostream_sink.h>

#include <mutex>
#include <sstream>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "curl_transport.h"
#include "fake_provider_server.h"
#include "front_door.h"
#include "http_api.h"
#include "http_provider.h"
#include "mailgun_provider.h"
#include "sendgrid_provider.h"
#include "test_helpers.h"

namespace fakes {

using namespace mailrelay;
using nlohmann::json;


// An audit sink in memory that fails on demand (the disk-full and unwritable-file faults).
class MemorySink final : public AuditSink {
 public:
  bool append(std::string_view line) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool request = line.find("\"event\":\"request\"") != std::string_view::npos;
    if (fail_all || (fail_requests && request)) return false;
    lines.emplace_back(line);
    return true;
  }
  std::string reopen() override { return ""; }
  bool probe() override { return !fail_all && !fail_requests; }
  AuditCounters counters() const override { return {}; }
  std::vector<std::string> snapshot() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines;
  }
  std::atomic<bool> fail_all{false}, fail_requests{false};

 private:
  std::mutex mutex_;
  std::vector<std::string> lines;
};

struct ApiHarness {
  // Options beyond the relay settings, body limit and tokens.
  struct Extras {
    FrontDoorSettings door;
    std::unique_ptr<EmailProvider> first_provider;  // replaces SendGrid when set
    std::unique_ptr<AuditSink> audit_sink;          // replaces the audit file when set
    std::unique_ptr<StateStore> state_store;        // replaces the in-memory store when set
    std::map<std::string, RateLimit> client_rates;  // --rate-limits
    EventEndpoints events;                          // webhook keys, --events-forward-url
  };
  struct CurlGlobal {
    CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
    ~CurlGlobal() { curl_global_cleanup(); }
  } curl_global;
  fakes::FakeProviderServer sendgrid_server, mailgun_server;
  SystemClock clock;
  CurlTransport transport{CurlTransportOptions{}};
  fakes::TempDir dir;
  std::unique_ptr<AuditLog> audit;
  Metrics metrics{"test"};
  std::unique_ptr<StateStore> store;
  std::ostringstream ops_text;  // the operational log
  std::shared_ptr<spdlog::logger> log =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(ops_text));
  ProviderHealth health{BreakerSettings{}, clock, *log};
  std::unique_ptr<ProviderControl> control;
  std::unique_ptr<HttpApi> api;
  FrontDoor server;
  std::thread thread;
  int port = 0;

  explicit ApiHarness(RelaySettings settings = {}, std::uint64_t max_body = 10485760, bool with_tokens = false,
                      Extras extras = {})
      : server(extras.door) {
    AuditSettings audit_settings;
    audit_settings.path = dir.file("audit.log");
    audit_settings.recipient_key = "fake-recipient-key-0123456789";
    if (extras.audit_sink) {
      audit = std::make_unique<AuditLog>(std::move(extras.audit_sink), audit_settings.recipient_key, clock, *log);
    } else {
      audit = std::move(AuditLog::open(audit_settings, clock, *log)).value();
    }
    store = extras.state_store ? std::move(extras.state_store) : std::make_unique<MemoryStateStore>(clock);
    control = std::make_unique<ProviderControl>(*store, std::chrono::milliseconds(0));
    auto runtime = std::make_shared<Runtime>();
    runtime->client_rates = extras.client_rates;
    runtime->events = extras.events;
    if (with_tokens) {
      runtime->tokens = std::make_unique<TokenStore>(
          TokenStore::parse("billing:billing-token-0123456789\nshop:shop-token-0123456789ab\n"
                            "percent:pct%41token-0123456789\nops:ops-token-0123456789abcd:admin\n").value());
    }
    if (extras.first_provider) {
      runtime->providers.push_back(std::move(extras.first_provider));
    } else {
      runtime->providers.push_back(std::make_unique<HttpProvider>(
          "sendgrid", std::make_unique<SendGridProvider>(sendgrid_server.base_url(), fakes::kSendGridKey), transport));
    }
    runtime->providers.push_back(std::make_unique<HttpProvider>(
        "mailgun", std::make_unique<MailgunProvider>(mailgun_server.base_url(), fakes::kMailgunDomain, fakes::kMailgunKey),
        transport));
    for (const auto& provider : runtime->providers) runtime->limits.tighten(provider->limits());
    runtime->relay = std::make_unique<Relay>(
        std::vector<EmailProvider*>{runtime->providers[0].get(), runtime->providers[1].get()}, settings, clock,
        &health, std::vector<AttemptObserver*>{audit.get(), &metrics});
    runtime->health = &health;
    runtime->provider_names = {runtime->providers[0]->name(), "mailgun"};
    api = std::make_unique<HttpApi>(runtime, *audit, metrics, *store, control.get(), ApiSettings{max_body, 4096, audit_settings.recipient_key, &transport}, clock, *log);
    api->install(server);
    port = server.bind("127.0.0.1", 0);
    thread = std::thread([this] { server.serve(); });
    for (int i = 0; i < 5000 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~ApiHarness() {
    server.shutdown();
    thread.join();
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(20, 0);
    return c;
  }
  std::string ops() {
    log->flush();
    return ops_text.str();
  }
  httplib::Result send(const json& body, httplib::Headers headers = {}) {
    return client().Post("/v1/send", headers, body.dump(), "application/json");
  }
  // Every line of the audit log, parsed.
  std::vector<json> audit_lines() {
    std::vector<json> out;
    std::string text = fakes::read_file(dir.file("audit.log"));
    std::size_t start = 0;
    for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
      out.push_back(json::parse(text.substr(start, nl - start)));
    }
    REQUIRE(start == text.size());  // ends with a complete line
    return out;
  }
};

inline json body_of(const httplib::Result& r) { return json::parse(r->body); }

inline void check_error(const httplib::Result& r, int status, const std::string& code) {
  REQUIRE(r);
  CHECK(r->status == status);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  json b = body_of(r);
  CHECK(b["error"]["code"] == code);
  CHECK_FALSE(b["error"]["message"].get<std::string>().empty());
  CHECK(b["request_id"] == r->get_header_value("X-Request-Id"));
}

}  // namespace fakes
