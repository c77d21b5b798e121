// Message status (README "Message status") on the real binary: the send's outcome and the
// delivery events joined to it, read by the client that sent it or an admin, from any instance
// of a fleet sharing Redis; never an address.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <thread>
#include <set>
#include <tuple>


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

namespace {

std::vector<json> audit_lines(const std::string& path) {
  std::vector<json> out;
  const std::string text = fakes::read_file(path);
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    out.push_back(json::parse(text.substr(start, nl - start)));
  }
  return out;
}

}  // namespace

TEST_CASE("batch: each message on its own, results in order, 207 when not all were sent", "[e2e][batch]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("tokens"), "billing:billing-token-0123456789\nops:ops-token-0123456789abcd:admin\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--tokens-file",
            dir.file("tokens"), "--audit-log", dir.file("audit.log"), "--max-batch", "4"});
  REQUIRE(d.port() > 0);
  const httplib::Headers billing{{"Authorization", "Bearer billing-token-0123456789"}};
  httplib::Headers first_batch = billing;
  first_batch.emplace("X-Request-Id", "batch-1");
  const httplib::Headers ops{{"Authorization", "Bearer ops-token-0123456789abcd"}};
  auto c = d.client();
  json keyed = fakes::sample_request();
  keyed["idempotency_key"] = "order-7";
  json suppressed = fakes::sample_request();
  suppressed["to"] = {"carol@example.org"};
  REQUIRE(status_of(c.Put("/v1/suppressions/carol@example.org", ops, R"({"reason": "batch test"})", "application/json")) == 200);
  const json batch{{"messages", {fakes::sample_request(), {{"from", "a@example.com"}, {"subject", "no to"}, {"text", "x"}},
                                 keyed, suppressed}}};
  auto r = c.Post("/v1/send/batch", first_batch, batch.dump(), "application/json");
  REQUIRE(status_of(r) == 207);
  json b = json::parse(r->body);
  CHECK(b["request_id"] == "batch-1");
  CHECK(b["summary"] == json{{"total", 4}, {"sent", 2}, {"failed", 2}});
  REQUIRE(b["results"].size() == 4);
  CHECK(b["results"][0]["request_id"] == "batch-1.0");
  CHECK(b["results"][0]["status"] == "sent");
  CHECK(b["results"][0]["http_status"] == 200);
  CHECK(b["results"][0]["provider"] == "outbox");
  CHECK(b["results"][1]["request_id"] == "batch-1.1");
  CHECK(b["results"][1]["http_status"] == 400);
  CHECK(b["results"][1]["error"]["code"] == "invalid_request");
  CHECK(b["results"][1]["error"]["field"] == "to");
  CHECK(b["results"][2]["status"] == "sent");
  CHECK(b["results"][3]["http_status"] == 422);
  CHECK(b["results"][3]["error"]["code"] == "recipient_suppressed");
  CHECK(files_in(dir.file("outbox")).size() == 2);
  // Each message has its status under its own id.
  CHECK(json::parse(c.Get("/v1/messages/batch-1.2", billing)->body)["message"]["status"] == "sent");

  // The same batch again: the keyed message is replayed (no second file), the first sent again.
  r = c.Post("/v1/send/batch", billing, batch.dump(), "application/json");
  REQUIRE(status_of(r) == 207);
  b = json::parse(r->body);
  CHECK(b["results"][2]["request_id"] == "batch-1.2");  // the first answer, replayed
  CHECK(files_in(dir.file("outbox")).size() == 3);

  // Every message sent: 200.
  json two{{"messages", {fakes::sample_request(), fakes::sample_request()}}};
  r = c.Post("/v1/send/batch", billing, two.dump(), "application/json");
  REQUIRE(status_of(r) == 200);
  CHECK(json::parse(r->body)["summary"]["sent"] == 2);

  // The batch itself refused: nothing sent.
  const std::size_t before = files_in(dir.file("outbox")).size();
  json five{{"messages", json::array()}};
  for (int i = 0; i < 5; ++i) five["messages"].push_back(fakes::sample_request());
  for (const std::string& body : {five.dump(), std::string(R"({"messages": []})"), std::string(R"({"messages": {}})"),
                                  std::string("[1, 2]"), std::string(R"({"messages": [{}], "extra": 1})"), std::string("{")}) {
    CAPTURE(body);
    auto refused = c.Post("/v1/send/batch", billing, body, "application/json");
    CHECK(status_of(refused) == 400);
    CHECK(json::parse(refused->body)["error"]["field"] == "messages");
  }
  CHECK(status_of(c.Post("/v1/send/batch", two.dump(), "application/json")) == 401);
  CHECK(status_of(c.Post("/v1/send/batch", ops, two.dump(), "application/json")) == 403);
  CHECK(status_of(c.Post("/v1/send/batch", billing, two.dump(), "text/plain")) == 415);
  json bad_key{{"messages", {fakes::sample_request()}}};
  bad_key["messages"][0]["idempotency_key"] = 7;
  r = c.Post("/v1/send/batch", billing, bad_key.dump(), "application/json");
  REQUIRE(status_of(r) == 207);
  CHECK(json::parse(r->body)["results"][0]["error"]["field"] == "idempotency_key");
  CHECK(files_in(dir.file("outbox")).size() == before);
  CHECK(d.stop() == 0);

  // The audit log: one line per message with its own id and the batch's, then the batch's line.
  std::vector<json> first;
  for (const json& line : audit_lines(dir.file("audit.log"))) {
    if (line.value("batch_id", "") == "batch-1" || line["request_id"] == "batch-1") first.push_back(line);
  }
  REQUIRE(first.size() == 5);
  CHECK(first[4]["request_id"] == "batch-1");
  CHECK(first[4]["outcome"] == "batch");
  CHECK(first[4]["status"] == 207);
  std::set<std::string> outcomes;
  for (int i = 0; i < 4; ++i) {
    CHECK(first[i]["path"] == "/v1/send/batch");
    CHECK(first[i]["client"] == "billing");
    outcomes.insert(first[i]["request_id"].get<std::string>() + "=" + first[i]["outcome"].get<std::string>());
  }
  CHECK(outcomes == std::set<std::string>{"batch-1.0=sent", "batch-1.1=invalid_request", "batch-1.2=sent",
                                          "batch-1.3=recipient_suppressed"});
}

TEST_CASE("batch: messages are relayed concurrently", "[e2e][batch]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid;
  fakes::FakeReply slow;
  slow.delay = std::chrono::milliseconds(1000);
  sendgrid.push_n(6, slow);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--audit-log", dir.file("audit.log")},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  json six{{"messages", json::array()}};
  for (int i = 0; i < 6; ++i) six["messages"].push_back(fakes::sample_request());
  const auto start = std::chrono::steady_clock::now();
  auto r = d.client().Post("/v1/send/batch", six.dump(), "application/json");
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(status_of(r) == 200);
  CHECK(sendgrid.count() == 6);
  // One after another it would take at least 6 s; together, about one.
  CHECK(took < std::chrono::seconds(4));
  CHECK(d.stop() == 0);
}

TEST_CASE("batch: each message counts against the client's rate limit", "[e2e][batch]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"),
            "--audit-log", dir.file("audit.log"), "--rate-limits", "*=2/m"});
  REQUIRE(d.port() > 0);
  // 2 a minute: a burst of 1, then one every 30 s. One of the three goes out.
  json three{{"messages", {fakes::sample_request(), fakes::sample_request(), fakes::sample_request()}}};
  auto r = d.client().Post("/v1/send/batch", three.dump(), "application/json");
  REQUIRE(status_of(r) == 207);
  json b = json::parse(r->body);
  CHECK(b["summary"]["sent"] == 1);
  int limited = 0;
  for (const json& result : b["results"]) limited += result.contains("error") && result["error"]["code"] == "rate_limited";
  CHECK(limited == 2);
  CHECK(files_in(dir.file("outbox")).size() == 1);
  CHECK(d.stop() == 0);
}
