// Message status (README "Message status") on the real binary: the send's outcome and the
// delivery events joined to it, read by the client that sent it or an admin, from any instance
// of a fleet sharing Redis; never an address.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <thread>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "hash.h"
#include "redis_server.h"
#include "test_helpers.h"
#include "test_keys.h"

using nlohmann::json;

namespace {

int status_of(const httplib::Result& r) { return r ? r->status : -1; }

std::string now_text() {
  return std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

TEST_CASE("message status: the sender and admins read it, others get 404, no token 401", "[e2e][messages]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("tokens"), "billing:billing-token-0123456789\nsignup:signup-token-0123456789\n"
                                        "ops:ops-token-0123456789abcd:admin\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--tokens-file",
            dir.file("tokens"), "--audit-log", dir.file("audit.log")});
  REQUIRE(d.port() > 0);
  const httplib::Headers billing{{"Authorization", "Bearer billing-token-0123456789"}, {"X-Request-Id", "status-1"}};
  const httplib::Headers signup{{"Authorization", "Bearer signup-token-0123456789"}};
  const httplib::Headers ops{{"Authorization", "Bearer ops-token-0123456789abcd"}};
  auto c = d.client();
  REQUIRE(status_of(c.Post("/v1/send", billing, fakes::sample_request().dump(), "application/json")) == 200);

  auto mine = c.Get("/v1/messages/status-1", billing);
  REQUIRE(status_of(mine) == 200);
  CHECK(json::parse(mine->body)["request_id"] == mine->get_header_value("X-Request-Id"));
  json m = json::parse(mine->body)["message"];
  CHECK(m["request_id"] == "status-1");
  CHECK(m["client"] == "billing");
  CHECK(m["status"] == "sent");
  CHECK(m["provider"] == "outbox");
  CHECK(m["provider_message_id"].is_string());
  CHECK(m["attempts"].size() == 1);
  CHECK(m["attempts"][0]["outcome"] == "sent");
  CHECK(m["received_at"].get<std::string>() <= m["completed_at"].get<std::string>());
  CHECK(m["events"] == json::array());
  for (const char* address : {"billing@", "alice@", "bob@"}) CHECK(mine->body.find(address) == std::string::npos);

  CHECK(status_of(c.Get("/v1/messages/status-1", ops)) == 200);
  CHECK(status_of(c.Get("/v1/messages/status-1", signup)) == 404);  // another client: not told it exists
  auto anonymous = c.Get("/v1/messages/status-1");
  CHECK(status_of(anonymous) == 401);
  CHECK(anonymous->get_header_value("WWW-Authenticate") == "Bearer");
  CHECK(status_of(c.Get("/v1/messages/never-sent", ops)) == 404);
  // HEAD is GET without a body; other methods are not taken.
  CHECK(status_of(c.Head("/v1/messages/status-1", billing)) == 200);
  CHECK(status_of(c.Delete("/v1/messages/status-1", ops)) == 405);

  // A failed send is kept with its error; a request refused before the relay is not a message.
  auto off = c.Patch("/v1/providers/outbox", ops, R"({"enabled": false, "reason": "status test"})", "application/json");
  REQUIRE(status_of(off) == 200);
  httplib::Headers failing = billing;
  failing.erase("X-Request-Id");
  failing.emplace("X-Request-Id", "status-2");
  CHECK(status_of(c.Post("/v1/send", failing, fakes::sample_request().dump(), "application/json")) == 503);
  json failed = json::parse(c.Get("/v1/messages/status-2", billing)->body)["message"];
  CHECK(failed["status"] == "failed");
  CHECK(failed["error"] == "no_provider_available");
  CHECK(failed["http_status"] == 503);
  CHECK(failed["provider"].is_null());
  failing.erase("X-Request-Id");
  failing.emplace("X-Request-Id", "status-3");
  CHECK(status_of(c.Post("/v1/send", failing, R"({"from": "a@example.com"})", "application/json")) == 400);
  CHECK(status_of(c.Get("/v1/messages/status-3", billing)) == 404);
  CHECK(d.stop() == 0);
}

TEST_CASE("message status: forgotten after --message-status-ttl", "[e2e][messages]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"),
            "--message-status-ttl", "1s", "--audit-log", dir.file("audit.log")});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  REQUIRE(status_of(c.Post("/v1/send", {{"X-Request-Id", "short-lived"}}, fakes::sample_request().dump(),
                           "application/json")) == 200);
  CHECK(status_of(c.Get("/v1/messages/short-lived")) == 200);  // loopback without tokens: open
  // Bounded wait: a 1 s TTL is over after at most 5 s on any machine.
  int last = 200;
  for (int i = 0; i < 50 && last == 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    last = status_of(c.Get("/v1/messages/short-lived"));
  }
  CHECK(last == 404);
  CHECK(d.stop() == 0);
  Daemon bad({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"),
              "--message-status-ttl", "7 days"});
  CHECK(bad.wait_exit(10000) == 2);
  CHECK_THAT(bad.err(), Catch::Contains("--message-status-ttl"));
}

TEST_CASE("message status: any instance of a fleet answers, with the delivery events joined", "[e2e][messages][fleet]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid;
  fakes::RedisServer redis;
  fakes::write_file(dir.file("recipient_key"), "fake-recipient-key-0123456789\n");
  auto start = [&](int i) {
    auto d = std::make_unique<Daemon>(
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url",
                                 sendgrid.base_url(), "--state-store", redis.url(), "--audit-log",
                                 dir.file("audit-" + std::to_string(i) + ".log"), "--audit-recipient-key-file",
                                 dir.file("recipient_key")},
        std::vector<std::string>{std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey,
                                 "MAILGUN_WEBHOOK_SIGNING_KEY=fake-mailgun-signing-key"});
    REQUIRE(d->port() > 0);
    return d;
  };
  auto a = start(0);
  auto b = start(1);
  auto sent = a->client().Post("/v1/send", {{"X-Request-Id", "fleet-status"}}, fakes::sample_request().dump(),
                               "application/json");
  REQUIRE(status_of(sent) == 200);
  // Mailgun reports a delivery and a hard bounce to instance b (any provider's events join by id).
  const std::string t = now_text();
  for (const auto& [token, event, recipient] :
       std::vector<std::tuple<std::string, std::string, std::string>>{{"tok-1", "delivered", "alice@example.org"},
                                                                      {"tok-2", "failed", "bob@example.org"}}) {
    json payload{{"signature", {{"timestamp", t}, {"token", token},
                                {"signature", mailrelay::hmac_sha256_hex("fake-mailgun-signing-key", t + token)}}},
                 {"event-data", {{"event", event}, {"recipient", recipient}, {"severity", "permanent"},
                                 {"user-variables", {{"mailrelay_request_id", "fleet-status"}}}}}};
    REQUIRE(status_of(b->client().Post("/v1/events/mailgun", payload.dump(), "application/json")) == 200);
  }
  auto read = b->client().Get("/v1/messages/fleet-status");
  REQUIRE(status_of(read) == 200);
  json m = json::parse(read->body)["message"];
  CHECK(m["status"] == "sent");
  CHECK(m["provider"] == "sendgrid");
  REQUIRE(m["events"].size() == 2);
  CHECK(m["events"][0]["type"] == "delivered");
  CHECK(m["events"][1]["type"] == "bounced");
  CHECK(m["events"][1]["bounce_class"] == "hard");
  CHECK(m["events"][1]["recipient_domain"] == "example.org");
  CHECK(m["events"][1]["recipient_hash"].get<std::string>().size() == 32);
  CHECK(read->body.find("bob@") == std::string::npos);
  CHECK(read->body.find("alice@") == std::string::npos);
  // The same from the instance that sent it; an unknown id is 404 on both.
  CHECK(json::parse(a->client().Get("/v1/messages/fleet-status")->body)["message"]["events"].size() == 2);
  CHECK(status_of(a->client().Get("/v1/messages/nope")) == 404);
  // The store is down: 503, not a wrong 404.
  redis.kill();
  auto down = b->client().Get("/v1/messages/fleet-status");
  CHECK(status_of(down) == 503);
  CHECK(json::parse(down->body)["error"]["code"] == "state_store_unavailable");
}
