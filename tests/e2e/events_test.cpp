// Delivery events end to end (README "Delivery events and suppressions"): two real daemons sharing a real redis-server,
// webhook keys given as files the way operators give them, a SendGrid key pair and a Mailgun
// signing key generated here. A message goes out through one instance, its bounce arrives at the
// other, the next message to that address is refused by the first, and the audit logs join it all.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "redis_server.h"
#include "hash.h"
#include "test_helpers.h"
#include "test_keys.h"

using nlohmann::json;

namespace {

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<json> lines(const std::string& path, const std::string& event) {
  std::vector<json> out;
  const std::string text = fakes::read_file(path);
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    json line = json::parse(text.substr(start, nl - start));
    if (line["event"] == event) out.push_back(std::move(line));
  }
  return out;
}

}  // namespace

TEST_CASE("events e2e: a bounce reported to one instance stops the next send on another", "[e2e][events]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, mailgun;
  fakes::RedisServer redis;
  fakes::EcKey key;
  fakes::write_file(dir.file("sendgrid_webhook_public_key"), key.public_base64() + "\n");
  fakes::write_file(dir.file("mailgun_webhook_signing_key"), "fake-mailgun-signing-key\n");
  fakes::write_file(dir.file("recipient_key"), "fake-recipient-key-0123456789\n");
  auto start = [&](int i) {
    std::vector<std::string> args{"--listen", "127.0.0.1:0", "--providers", "sendgrid,mailgun",
                                  "--sendgrid-base-url", sendgrid.base_url(), "--mailgun-base-url", mailgun.base_url(),
                                  "--mailgun-domain", fakes::kMailgunDomain, "--state-store", redis.url(),
                                  "--audit-log", dir.file("audit-" + std::to_string(i) + ".log"),
                                  "--audit-recipient-key-file", dir.file("recipient_key"),
                                  "--sendgrid-webhook-public-key-file", dir.file("sendgrid_webhook_public_key")};
    auto d = std::make_unique<Daemon>(
        args, std::vector<std::string>{std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey,
                                       std::string("MAILGUN_API_KEY=") + fakes::kMailgunKey,
                                       "MAILGUN_WEBHOOK_SIGNING_KEY=fake-mailgun-signing-key"});
    REQUIRE(d->port() > 0);
    return d;
  };
  auto a = start(0);
  auto b = start(1);

  auto sent = a->client().Post("/v1/send", {{"X-Request-Id", "order-e2e"}}, fakes::sample_request().dump(),
                               "application/json");
  REQUIRE(sent);
  REQUIRE(sent->status == 200);
  REQUIRE(sendgrid.count() == 1);

  // SendGrid reports bob's hard bounce to instance b, signed.
  const std::string body = json::array({{{"email", "bob@example.org"}, {"timestamp", now_seconds()}, {"event", "bounce"},
                                         {"type", "bounce"}, {"sg_event_id", "sg-e2e-1"}, {"sg_message_id", "m.filter"},
                                         {"mailrelay_request_id", "order-e2e"},
                                         {"reason", "550 5.1.1 bob@example.org unknown"}}})
                               .dump() + "\r\n";
  const std::string t = std::to_string(now_seconds());
  auto bad = b->client().Post("/v1/events/sendgrid",
                              {{"X-Twilio-Email-Event-Webhook-Signature", fakes::EcKey().sign(t + body)},
                               {"X-Twilio-Email-Event-Webhook-Timestamp", t}},
                              body, "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 401);
  auto good = b->client().Post("/v1/events/sendgrid",
                               {{"X-Twilio-Email-Event-Webhook-Signature", key.sign(t + body)},
                                {"X-Twilio-Email-Event-Webhook-Timestamp", t}},
                               body, "application/json");
  REQUIRE(good);
  CHECK(good->status == 200);
  // Mailgun's endpoint is on from the environment; its signature is checked too.
  const json mailgun_event{{"signature", {{"timestamp", t}, {"token", "tok-e2e"},
                                          {"signature", mailrelay::hmac_sha256_hex("fake-mailgun-signing-key", t + "tok-e2e")}}},
                           {"event-data", {{"event", "delivered"}, {"recipient", "alice@example.org"},
                                           {"user-variables", {{"mailrelay_request_id", "order-e2e"}}}}}};
  auto delivered = a->client().Post("/v1/events/mailgun", mailgun_event.dump(), "application/json");
  REQUIRE(delivered);
  CHECK(delivered->status == 200);

  // The next message naming bob, through instance a: refused, no provider called.
  auto refused = a->client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 422);
  CHECK(json::parse(refused->body)["error"]["code"] == "recipient_suppressed");
  CHECK(json::parse(refused->body)["error"]["field"] == "to[1]");
  CHECK(sendgrid.count() == 1);
  CHECK(mailgun.count() == 0);

  // The audit logs answer "what happened to order-e2e": sent by a, bounced for bob, delivered to alice.
  auto bounce = lines(dir.file("audit-1.log"), "delivery");
  REQUIRE(bounce.size() == 1);
  CHECK(bounce[0]["request_id"] == "order-e2e");
  CHECK(bounce[0]["type"] == "bounced");
  CHECK(bounce[0]["bounce_class"] == "hard");
  CHECK(bounce[0]["reason"] == "550 5.1.1 <address> unknown");
  auto delivery = lines(dir.file("audit-0.log"), "delivery");
  REQUIRE(delivery.size() == 1);
  CHECK(delivery[0]["type"] == "delivered");
  CHECK(delivery[0]["request_id"] == "order-e2e");
  for (const char* log : {"audit-0.log", "audit-1.log"}) {
    CHECK(fakes::read_file(dir.file(log)).find("bob@") == std::string::npos);
  }
  // And the daemon's metrics count them.
  const std::string metrics = b->client().Get("/metrics")->body;
  CHECK(metrics.find("mailrelay_delivery_events_total{provider=\"sendgrid\",type=\"bounced\"} 1") != std::string::npos);
}
