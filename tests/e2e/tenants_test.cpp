// Tenants on the real binary (SPEC §20-22): request ids per client, adaptive routing that one
// client cannot steer and that gives a recovered provider its traffic back, strict bodies and a
// configuration that refuses its mistakes by line.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "base64.h"
#include "hash.h"
#include "redis_server.h"
#include "test_helpers.h"
#include "test_keys.h"

using nlohmann::json;

namespace {

int status_of(const httplib::Result& r) { return r ? r->status : -1; }

httplib::Headers as(const std::string& token, const std::string& request_id = "") {
  httplib::Headers h{{"Authorization", "Bearer " + token}};
  if (!request_id.empty()) h.emplace("X-Request-Id", request_id);
  return h;
}

constexpr const char* kAlice = "alice-token-0123456789";
constexpr const char* kBob = "bob-token-0123456789ab";
constexpr const char* kOps = "ops-token-0123456789abcd";

// A signed Mailgun event for `request_id`, stamped by `client` ("" for no client stamp).
json mailgun_event(const std::string& token, const std::string& event, const std::string& request_id,
                   const std::string& client) {
  const std::string t = std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  json variables{{"mailrelay_request_id", request_id}};
  if (!client.empty()) variables["mailrelay_client"] = client;
  return json{{"signature", {{"timestamp", t}, {"token", token},
                             {"signature", mailrelay::hmac_sha256_hex("fake-mailgun-signing-key", t + token)}}},
              {"event-data", {{"event", event}, {"recipient", "carol@example.org"}, {"severity", "permanent"},
                              {"delivery-status", {{"description", "550 5.1.1 no such user"}}},
                              {"user-variables", variables}}}};
}

// SendGrid then Mailgun (fakes) under --strategy adaptive.
struct AdaptivePair {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, mailgun;
  std::unique_ptr<Daemon> daemon;
  AdaptivePair() {
    fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
    fakes::write_file(dir.file("mg.key"), fakes::kMailgunKey);
    daemon = std::make_unique<Daemon>(std::vector<std::string>{
        "--listen", "127.0.0.1:0", "--providers", "sendgrid,mailgun", "--strategy", "adaptive", "--sendgrid-base-url",
        sendgrid.base_url(), "--sendgrid-api-key-file", dir.file("sg.key"), "--mailgun-base-url", mailgun.base_url(),
        "--mailgun-domain", fakes::kMailgunDomain, "--mailgun-api-key-file", dir.file("mg.key"), "--audit-log",
        dir.file("audit.log")});
    REQUIRE(daemon->port() > 0);
  }
};

}  // namespace

TEST_CASE("request ids belong to clients: none can read, hide, pre-claim or learn of another's", "[e2e][tenants]") {
  fakes::RedisServer redis;
  for (const bool shared : {false, true}) {
    DYNAMIC_SECTION((shared ? "redis" : "memory")) {
      fakes::TempDir dir;
      fakes::FakeProviderServer mailgun;
      fakes::write_file(dir.file("tokens"), std::string("alice:") + kAlice + "\nbob:" + kBob + "\nops:" + kOps + ":admin\n");
      fakes::write_file(dir.file("mg.key"), fakes::kMailgunKey);
      std::vector<std::string> args{"--listen", "127.0.0.1:0", "--providers", "mailgun", "--mailgun-base-url",
                                    mailgun.base_url(), "--mailgun-domain", fakes::kMailgunDomain,
                                    "--mailgun-api-key-file", dir.file("mg.key"), "--tokens-file", dir.file("tokens"),
                                    "--audit-log", dir.file("audit.log")};
      if (shared) {
        args.push_back("--state-store");
        args.push_back(redis.url());
      }
      Daemon d(args, {"MAILGUN_WEBHOOK_SIGNING_KEY=fake-mailgun-signing-key"});
      REQUIRE(d.port() > 0);
      auto c = d.client();
      // Bob claims the id first (a sandbox send), then Alice sends real mail under it.
      json sandbox = fakes::sample_request();
      sandbox["sandbox"] = true;
      REQUIRE(status_of(c.Post("/v1/send", as(kBob, "invoice-900"), sandbox.dump(), "application/json")) == 200);
      REQUIRE(status_of(c.Post("/v1/send", as(kAlice, "invoice-900"), fakes::sample_request().dump(),
                               "application/json")) == 200);
      // The provider call carries what joins an event to exactly one client's message.
      REQUIRE(mailgun.count() == 2);
      CHECK(mailgun.received()[1].form_values("v:mailrelay_client") == std::vector<std::string>{"alice"});
      CHECK(mailgun.received()[1].form_values("v:mailrelay_request_id") == std::vector<std::string>{"invoice-900"});
      // Alice's bounce arrives, stamped as her message.
      REQUIRE(status_of(c.Post("/v1/events/mailgun", mailgun_event("tok-a", "failed", "invoice-900", "alice").dump(),
                               "application/json")) == 200);

      auto alices = c.Get("/v1/messages/invoice-900", as(kAlice));
      REQUIRE(status_of(alices) == 200);
      json mine = json::parse(alices->body);
      CHECK(mine["message"]["client"] == "alice");
      CHECK(mine["message"]["sandbox"] == false);
      REQUIRE(mine["message"]["events"].size() == 1);
      CHECK(mine["message"]["events"][0]["type"] == "bounced");
      CHECK(mine["messages"].size() == 1);

      auto bobs = c.Get("/v1/messages/invoice-900", as(kBob));
      REQUIRE(status_of(bobs) == 200);
      json his = json::parse(bobs->body)["message"];
      CHECK(his["client"] == "bob");
      CHECK(his["sandbox"] == true);
      CHECK(his["events"] == json::array());  // Alice's bounce is not in Bob's record
      CHECK(bobs->body.find("example.org") == std::string::npos);
      CHECK(bobs->body.find("550") == std::string::npos);

      // Admin sees both, each with its client.
      auto all = c.Get("/v1/messages/invoice-900", as(kOps));
      REQUIRE(status_of(all) == 200);
      json every = json::parse(all->body)["messages"];
      REQUIRE(every.size() == 2);
      CHECK(every[0]["client"] != every[1]["client"]);
      for (const json& m : every) CHECK((m["client"] == "alice" || m["client"] == "bob"));

      // Whether another client used an id cannot be learned: the same 404 as an id never used.
      auto before = c.Get("/v1/messages/bob-only", as(kAlice));
      REQUIRE(status_of(c.Post("/v1/send", as(kBob, "bob-only"), sandbox.dump(), "application/json")) == 200);
      auto taken = c.Get("/v1/messages/bob-only", as(kAlice));
      auto never = c.Get("/v1/messages/nobody-used", as(kAlice));
      REQUIRE(status_of(before) == 404);
      REQUIRE(status_of(taken) == 404);
      REQUIRE(status_of(never) == 404);
      CHECK(json::parse(taken->body)["error"]["message"] == json::parse(before->body)["error"]["message"]);
      CHECK(json::parse(taken->body)["error"]["message"] == json::parse(never->body)["error"]["message"]);
      // And Alice can still send under it: ids are not pre-claimed by another client.
      REQUIRE(status_of(c.Post("/v1/send", as(kAlice, "bob-only"), fakes::sample_request().dump(),
                               "application/json")) == 200);
      CHECK(json::parse(c.Get("/v1/messages/bob-only", as(kAlice))->body)["message"]["client"] == "alice");

      // Batch item ids (<id>.<i>) are the client's too.
      json batch{{"messages", json::array({fakes::sample_request()})}};
      REQUIRE(status_of(c.Post("/v1/send/batch", as(kBob, "run-7"), batch.dump(), "application/json")) == 200);
      REQUIRE(status_of(c.Post("/v1/send", as(kAlice, "run-7.0"), fakes::sample_request().dump(),
                               "application/json")) == 200);
      CHECK(json::parse(c.Get("/v1/messages/run-7.0", as(kAlice))->body)["message"]["client"] == "alice");
      CHECK(json::parse(c.Get("/v1/messages/run-7.0", as(kBob))->body)["message"]["client"] == "bob");

      // A client cannot forge the stamp.
      json forged = fakes::sample_request();
      forged["metadata"] = {{"mailrelay_client", "alice"}};
      auto refused = c.Post("/v1/send", as(kBob), forged.dump(), "application/json");
      REQUIRE(status_of(refused) == 400);
      CHECK(json::parse(refused->body)["error"]["field"] == "metadata.mailrelay_client");
      CHECK(d.stop() == 0);
    }
  }
}

TEST_CASE("adaptive: sandbox and large sends from one client do not move everyone's traffic", "[e2e][tenants][adaptive]") {
  AdaptivePair pair;
  fakes::FakeProviderServer& sendgrid = pair.sendgrid;
  Daemon& d = *pair.daemon;
  auto c = d.client();
  c.set_read_timeout(std::chrono::seconds(30));
  auto provider_of = [&](const json& body) {
    auto r = c.Post("/v1/send", body.dump(), "application/json");
    REQUIRE(status_of(r) == 200);
    return json::parse(r->body)["provider"].get<std::string>();
  };
  for (int i = 0; i < 3; ++i) CHECK(provider_of(fakes::sample_request()) == "sendgrid");
  // Two slow sandbox sends with 3 MB attachments, then two slow large real ones.
  json large = fakes::sample_request();
  large["attachments"] = json::array({{{"filename", "big.bin"}, {"content_type", "application/octet-stream"},
                                       {"content", mailrelay::base64_encode(std::string(3 << 20, 'x'))}}});
  json large_sandbox = large;
  large_sandbox["sandbox"] = true;
  fakes::FakeReply slow;
  slow.delay = std::chrono::milliseconds(1500);
  sendgrid.push_n(2, slow);
  CHECK(provider_of(large_sandbox) == "sendgrid");
  CHECK(provider_of(large_sandbox) == "sendgrid");
  sendgrid.push_n(1, slow);
  CHECK(provider_of(large) == "sendgrid");
  CHECK(provider_of(large) == "mailgun");  // large messages move
  int to_sendgrid = 0;
  for (int i = 0; i < 8; ++i) to_sendgrid += provider_of(fakes::sample_request()) == "sendgrid" ? 1 : 0;
  CHECK(to_sendgrid == 8);  // small ones do not
  json view = json::parse(c.Get("/v1/providers")->body);
  CHECK(view["strategy"] == "adaptive");
  CHECK(view["order"] == json::array({"sendgrid", "mailgun"}));
  CHECK(d.stop() == 0);
}

TEST_CASE("adaptive: a provider that recovers is first again within 10 s, probes at most 1 in 20", "[e2e][tenants][adaptive]") {
  AdaptivePair pair;
  fakes::FakeProviderServer& sendgrid = pair.sendgrid;
  Daemon& d = *pair.daemon;
  auto c = d.client();
  const std::string body = fakes::sample_request().dump();
  // Sends at about 50 a second (one at a time) for `seconds`: how many went first to each.
  struct Tally {
    int sendgrid = 0, mailgun = 0;
  };
  auto drive = [&](std::chrono::milliseconds period) {
    Tally t;
    const auto until = std::chrono::steady_clock::now() + period;
    for (int i = 0; i < 2000 && std::chrono::steady_clock::now() < until; ++i) {
      auto r = c.Post("/v1/send", body, "application/json");
      REQUIRE(status_of(r) == 200);
      (json::parse(r->body)["attempts"][0]["provider"] == "sendgrid" ? t.sendgrid : t.mailgun)++;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return t;
  };
  sendgrid.set_delay(std::chrono::milliseconds(600));
  drive(std::chrono::seconds(1));
  Tally slowed = drive(std::chrono::seconds(4));
  CHECK(slowed.sendgrid >= 1);                                 // probed while traffic flows
  CHECK(slowed.sendgrid * 20 <= slowed.sendgrid + slowed.mailgun + 20);  // at most 1 in 20 (and one of slack)
  json view = json::parse(c.Get("/v1/providers")->body);
  CHECK(view["order"] == json::array({"mailgun", "sendgrid"}));  // the order in use
  CHECK(view["configured_order"] == json::array({"sendgrid", "mailgun"}));
  sendgrid.set_delay(std::chrono::milliseconds(0));
  drive(std::chrono::seconds(9));
  Tally recovered = drive(std::chrono::seconds(1));  // the tenth second
  CHECK(recovered.sendgrid >= 9 * (recovered.sendgrid + recovered.mailgun) / 10);
  CHECK(json::parse(c.Get("/v1/providers")->body)["order"] == json::array({"sendgrid", "mailgun"}));
  CHECK(d.stop() == 0);
}

TEST_CASE("strict bodies: unknown members and null are 400 with the field, and change nothing", "[e2e][tenants][strict]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--audit-log",
            dir.file("audit.log")});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  auto field_of = [](const httplib::Result& r) {
    REQUIRE(status_of(r) == 400);
    json error = json::parse(r->body)["error"];
    CHECK(error["code"] == "invalid_request");
    return error["field"].get<std::string>();
  };
  CHECK(field_of(c.Patch("/v1/providers/outbox", R"({"enabled": false, "enabeld": true})", "application/json")) ==
        "enabeld");
  CHECK(json::parse(c.Get("/v1/providers")->body)["providers"][0]["enabled"] == true);  // unchanged
  CHECK(field_of(c.Patch("/v1/providers/outbox", R"({"enabled": false, "reason": null})", "application/json")) ==
        "reason");
  CHECK(field_of(c.Put("/v1/providers/order", R"({"order": ["outbox"], "reson": "x"})", "application/json")) == "reson");
  CHECK(field_of(c.Put("/v1/suppressions/carol@example.org", R"({"why": "asked us"})", "application/json")) == "why");
  CHECK(status_of(c.Get("/v1/suppressions/carol@example.org")) == 404);  // not suppressed, reason not lost
  json with_null = fakes::sample_request();
  for (const char* member : {"cc", "bcc", "reply_to", "text", "headers", "attachments", "tags", "metadata", "sandbox"}) {
    json body = with_null;
    body[member] = nullptr;
    CHECK(field_of(c.Post("/v1/send", body.dump(), "application/json")) == member);
  }
  json named = with_null;
  named["to"] = json::array({{{"email", "alice@example.org"}, {"name", nullptr}}});
  CHECK(field_of(c.Post("/v1/send", named.dump(), "application/json")) == "to[0].name");
  CHECK(status_of(c.Post("/v1/send", fakes::sample_request().dump(), "application/json")) == 200);
  CHECK(d.stop() == 0);
}

namespace {

// `mailrelayd ARGS`: its exit status and what it wrote (stdout and stderr together).
std::pair<int, std::string> run_command(const std::string& args) {
  std::string out;
  FILE* p = popen((std::string(MAILRELAYD_PATH) + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST_CASE("configuration: duplicates, sections and bad values exit 2 naming their line", "[e2e][tenants][check]") {
  fakes::TempDir dir;
  const std::string base = "providers = outbox\noutbox-dir = " + dir.file("outbox") + "\n";
  auto check = [&](const std::string& text) {
    fakes::write_file(dir.file("m.conf"), text);
    return run_command("check-config --config " + dir.file("m.conf"));
  };
  const std::string where = "--config " + dir.file("m.conf") + " line ";
  auto [ok, good] = check(base);
  CHECK(ok == 0);
  auto [dup, dup_text] = check(base + "outbox-dir = " + dir.file("other") + "\n");
  CHECK(dup == 2);
  CHECK_THAT(dup_text, Catch::Contains(where + "3: 'outbox-dir' is already set on line 2"));
  auto [twice, twice_text] = check(base + "max-in-flight = 100\nmax_in_flight = 200\n");
  CHECK(twice == 2);
  CHECK_THAT(twice_text, Catch::Contains(where + "4: 'max-in-flight' is already set on line 3"));
  auto [last, last_text] = check(base + "[relay]\n");
  CHECK(last == 2);
  CHECK_THAT(last_text, Catch::Contains(where + "3: sections are not supported"));
  auto [value, value_text] = check(base + "strategy = \"fastest\"\n");
  CHECK(value == 2);
  CHECK_THAT(value_text, Catch::Contains(where + "3: --strategy must be"));

  fakes::write_file(dir.file("tokens"), "ops:ops-token-0123456789abcd:admn\n");
  auto [scope, scope_text] = run_command("check-config --providers outbox --outbox-dir " + dir.file("outbox") +
                                         " --tokens-file " + dir.file("tokens"));
  CHECK(scope == 2);
  CHECK_THAT(scope_text, Catch::Contains("line 1: unknown scope 'admn'"));
  CHECK(scope_text.find("ops-token") == std::string::npos);
  fakes::write_file(dir.file("tokens"), "a:shared-token-0123456789\n# rotated\nb:shared-token-0123456789\n");
  auto [same, same_text] = run_command("check-config --providers outbox --outbox-dir " + dir.file("outbox") +
                                       " --tokens-file " + dir.file("tokens"));
  CHECK(same == 2);
  CHECK_THAT(same_text, Catch::Contains("line 3: the same token as line 1"));
}

TEST_CASE("hash-address refuses what is not an address, --version says the build's version", "[e2e][tenants][check]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("recipient.key"), "fake-recipient-key-for-tests-0123\n");
  const std::string hash = "hash-address --audit-recipient-key-file " + dir.file("recipient.key") + " ";
  auto [plain, plain_out] = run_command(hash + "bob@example.org");
  CHECK(plain == 0);
  auto [bad, bad_out] = run_command(hash + "notanaddress");
  CHECK(bad == 2);
  CHECK_THAT(bad_out, Catch::Contains("not an email address"));
  auto [named, named_out] = run_command(hash + "'Bob <bob@example.org>'");
  CHECK(named == 0);
  CHECK_THAT(named_out, Catch::Contains("display name is not part of it"));
  CHECK_THAT(named_out, Catch::EndsWith(plain_out));  // the same hash as the addr-spec's
  auto [version, version_out] = run_command("--version");
  CHECK(version == 0);
  CHECK(version_out == std::string("mailrelayd ") + MAILRELAY_VERSION + "\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox")});
  REQUIRE(d.port() > 0);
  CHECK(json::parse(d.client().Get("/v1/openapi.json")->body)["info"]["version"] == MAILRELAY_VERSION);
  CHECK(d.stop() == 0);
}
