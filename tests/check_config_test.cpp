// `mailrelayd check-config`: what a start would load, checked without serving; the report names
// what the daemon would run with and never a secret; every problem a start would hit is exit 2.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "check_config.h"
#include "redis_server.h"
#include "test_helpers.h"

using namespace mailrelay;

TEST_CASE("check-config: a good configuration is reported without its secrets", "[config][check]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("sendgrid_key"), "SG.fake-secret-never-printed\n");
  fakes::write_file(dir.file("tokens"), "billing:billing-token-0123456789\nops:ops-token-0123456789abcd:admin\n");
  auto report = check_config({"--providers", "sendgrid,outbox", "--sendgrid-api-key-file", dir.file("sendgrid_key"),
                              "--outbox-dir", dir.file("out"), "--tokens-file", dir.file("tokens"), "--audit-log",
                              dir.file("audit.log"), "--rate-limits", "billing=20/s"});
  REQUIRE(report);
  const std::string& text = report.value();
  CHECK(text.find("providers: sendgrid,outbox (strategy failover)") != std::string::npos);
  CHECK(text.find("clients: 2") != std::string::npos);
  CHECK(text.find("state store: memory") != std::string::npos);
  CHECK(text.find("rate limits: billing=20/s") != std::string::npos);
  CHECK(text.find("configuration OK") != std::string::npos);
  CHECK(text.find("fake-secret") == std::string::npos);
  CHECK(text.find("billing-token") == std::string::npos);
  CHECK(access(dir.file("audit.log").c_str(), F_OK) != 0);  // checked, not created
}

TEST_CASE("check-config: what would stop a start stops the check, with the reason", "[config][check]") {
  fakes::TempDir dir;
  const std::vector<std::string> outbox{"--providers", "outbox", "--outbox-dir", dir.file("out")};
  auto with = [&](std::vector<std::string> more) {
    auto args = outbox;
    args.insert(args.end(), more.begin(), more.end());
    return check_config(args);
  };
  CHECK(with({}));
  auto no_tokens = with({"--tokens-file", dir.file("missing")});
  REQUIRE_FALSE(no_tokens);
  CHECK(no_tokens.error().code == 2);
  auto audit = with({"--audit-log", dir.file("no/such/dir/audit.log")});
  REQUIRE_FALSE(audit);
  CHECK(audit.error().text.find("does not exist") != std::string::npos);
  CHECK_FALSE(with({"--deadline-ms", "0"}));
  CHECK_FALSE(check_config({"--providers", "sendgrid"}));  // no API key anywhere
  // The state store must answer.
  fakes::RedisServer redis;
  auto reachable = with({"--state-store", redis.url()});
  REQUIRE(reachable);
  CHECK(reachable.value().find("(reachable)") != std::string::npos);
  redis.kill();
  auto unreachable = with({"--state-store", redis.url()});
  REQUIRE_FALSE(unreachable);
  CHECK(unreachable.error().code == 2);
  CHECK(unreachable.error().text.find("does not answer") != std::string::npos);
}
