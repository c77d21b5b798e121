// What operators import must fit what the daemon exports: every metric name the Grafana dashboard
// and the Prometheus rules in contrib/ use is one a live daemon's /metrics declares (histograms
// with their _bucket, _sum and _count series), and `mailrelayd check-config` says OK or why not.
#include <catch2/catch.hpp>

#include <regex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "daemon.h"
#include "test_helpers.h"

namespace {

// The metric names /metrics declares with "# TYPE".
std::set<std::string> exported(const std::string& text) {
  std::set<std::string> names;
  std::regex type_line(R"(# TYPE ([a-z_:][a-z0-9_:]*) ([a-z]+))");
  for (std::sregex_iterator it(text.begin(), text.end(), type_line), end; it != end; ++it) {
    const std::string name = (*it)[1];
    names.insert(name);
    if ((*it)[2] == "histogram") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(name + suffix);
    }
  }
  return names;
}

std::set<std::string> used(const std::string& text) {
  std::set<std::string> names;
  std::regex metric(R"(\bmailrelay_[a-z0-9_]+)");
  for (std::sregex_iterator it(text.begin(), text.end(), metric), end; it != end; ++it) names.insert((*it)[0]);
  return names;
}

}  // namespace

TEST_CASE("contrib: the dashboard and the alert rules use only metrics the daemon exports", "[e2e][contrib]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox")});
  REQUIRE(d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json")->status == 200);
  auto metrics = d.client().Get("/metrics");
  REQUIRE(metrics);
  const std::set<std::string> names = exported(metrics->body);
  REQUIRE(names.count("mailrelay_requests_total") == 1);
  const std::string dashboard = fakes::read_file(std::string(MAILRELAY_SOURCE_DIR) + "/contrib/grafana/mailrelay-dashboard.json");
  REQUIRE(nlohmann::json::parse(dashboard)["panels"].size() >= 10);
  const std::string rules = fakes::read_file(std::string(MAILRELAY_SOURCE_DIR) + "/contrib/prometheus/mailrelay-rules.yml");
  for (const auto* text : {&dashboard, &rules}) {
    const std::set<std::string> wanted = used(*text);
    CHECK(wanted.size() >= 8);
    for (const auto& name : wanted) {
      INFO(name);
      CHECK(names.count(name) == 1);
    }
  }
}

TEST_CASE("check-config: exit 0 with the report, exit 2 with the reason", "[e2e][check]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("mailrelay.conf"), "providers = outbox\noutbox-dir = " + dir.file("outbox") + "\n");
  auto run = [&](const std::string& args) {
    std::string out;
    FILE* p = popen((std::string(MAILRELAYD_PATH) + " check-config " + args + " 2>&1; echo \"exit=$?\"").c_str(), "r");
    REQUIRE(p);
    char buf[4096];
    for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    pclose(p);
    return out;
  };
  const std::string good = run("--config " + dir.file("mailrelay.conf"));
  CHECK(good.find("providers: outbox") != std::string::npos);
  CHECK(good.find("configuration OK\nexit=0") != std::string::npos);
  fakes::write_file(dir.file("broken.conf"), "providers = outbox\nno-such-option = 1\n");
  const std::string broken = run("--config " + dir.file("broken.conf"));
  CHECK(broken.find("unknown option 'no-such-option'") != std::string::npos);
  CHECK(broken.find("exit=2") != std::string::npos);
}
