// Delivery events and suppressions over HTTP (README "Delivery events and suppressions"): signed webhooks (a key pair and an
// HMAC key generated here), stale and replayed events, the join to the request id in the audit
// log, a suppression learned from Mailgun stopping a send through SendGrid, the admin API, and
// forwarding to an app on loopback that refuses and then takes a batch.
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "api_harness.h"
#include "event_service.h"
#include "redis_server.h"
#include "redis_state_store.h"
#include "hash.h"
#include "test_keys.h"

using namespace mailrelay;
using fakes::ApiHarness;
using fakes::body_of;
using fakes::check_error;
using nlohmann::json;

namespace {

constexpr const char* kMailgunSigningKey = "fake-mailgun-webhook-signing-key";
constexpr const char* kPostmarkCredentials = "postmark:fake-webhook-password";
const httplib::Headers kOps{{"Authorization", "Bearer ops-token-0123456789abcd"}};
const httplib::Headers kBilling{{"Authorization", "Bearer billing-token-0123456789"}};

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Keys {
  fakes::EcKey sendgrid;
  ApiHarness::Extras extras(std::string forward_url = "") {
    ApiHarness::Extras e;
    const std::string forward_key = forward_url.empty() ? "" : "fake-forward-key-0123456789";
    e.events = {{{"sendgrid", sendgrid.public_base64()}, {"mailgun", kMailgunSigningKey}, {"postmark", kPostmarkCredentials}},
                std::move(forward_url), forward_key};
    return e;
  }
};

httplib::Result post_sendgrid(ApiHarness& h, const fakes::EcKey& key, const json& events,
                              std::int64_t timestamp = now_seconds()) {
  const std::string body = events.dump() + "\r\n";
  const std::string t = std::to_string(timestamp);
  httplib::Headers headers{{"X-Twilio-Email-Event-Webhook-Signature", key.sign(t + body)},
                           {"X-Twilio-Email-Event-Webhook-Timestamp", t}};
  return h.client().Post("/v1/events/sendgrid", headers, body, "application/json");
}

json mailgun_body(const json& data, const std::string& token, std::int64_t timestamp = now_seconds(),
                  const std::string& key = kMailgunSigningKey) {
  const std::string t = std::to_string(timestamp);
  return json{{"signature", {{"timestamp", t}, {"token", token}, {"signature", hmac_sha256_hex(key, t + token)}}},
              {"event-data", data}};
}

httplib::Result post_mailgun(ApiHarness& h, const json& body) {
  return h.client().Post("/v1/events/mailgun", body.dump(), "application/json");
}

json hard_bounce(const std::string& recipient, const std::string& request_id) {
  return json{{"event", "failed"},
              {"severity", "permanent"},
              {"reason", "bounce"},
              {"recipient", recipient},
              {"timestamp", now_seconds()},
              {"delivery-status", {{"code", 550}, {"description", "550 5.1.1 " + recipient + " does not exist"}}},
              {"message", {{"headers", {{"message-id", "20261203.abc@mg.example.com"}}}}},
              {"user-variables", {{"mailrelay_request_id", request_id}}}};
}

std::vector<json> lines_of(ApiHarness& h, const std::string& event) {
  std::vector<json> out;
  for (auto& l : h.audit_lines()) {
    if (l["event"] == event) out.push_back(l);
  }
  return out;
}

// An app on loopback taking forwarded batches: answers `statuses` in order, then 200.
struct App {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::mutex mutex;
  std::vector<int> statuses;
  std::vector<std::pair<std::string, std::string>> received;  // signature, body
  App() {
    server.Post("/events", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mutex);
      received.emplace_back(req.get_header_value("X-Mailrelay-Signature"), req.body);
      res.status = statuses.empty() ? 200 : statuses.front();
      if (!statuses.empty()) statuses.erase(statuses.begin());
    });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    for (int i = 0; i < 500 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~App() {
    server.stop();
    thread.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port) + "/events"; }
};

}  // namespace

TEST_CASE("events: a signed SendGrid batch becomes delivery lines, a replay is ignored", "[events][api]") {
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras());
  const json batch = json::array(
      {{{"email", "alice@example.org"}, {"timestamp", now_seconds()}, {"event", "delivered"}, {"sg_event_id", "sg-1"},
        {"sg_message_id", "msg-1.filter"}, {"mailrelay_request_id", "order-4711"}, {"response", "250 OK"}},
       {{"email", "alice@example.org"}, {"timestamp", now_seconds()}, {"event", "processed"}, {"sg_event_id", "sg-0"}}});
  auto r = post_sendgrid(h, keys.sendgrid, batch);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(body_of(r)["accepted"] == 1);
  CHECK(body_of(r)["ignored"] == 1);
  auto delivery = lines_of(h, "delivery");
  REQUIRE(delivery.size() == 1);
  const json& d = delivery[0];
  CHECK(d["provider"] == "sendgrid");
  CHECK(d["type"] == "delivered");
  CHECK(d["bounce_class"].is_null());
  CHECK(d["request_id"] == "order-4711");
  CHECK(d["provider_message_id"] == "msg-1.filter");
  CHECK(d["provider_event_id"] == "sg-1");
  CHECK(d["suppressed"] == false);
  CHECK(d["recipient_domain"] == "example.org");
  CHECK(d["recipient_hash"] == hash_address("fake-recipient-key-0123456789", "alice@example.org"));
  CHECK(d["reason"] == "250 OK");
  CHECK_FALSE(d["occurred_at"].get<std::string>().empty());
  CHECK(fakes::read_file(h.dir.file("audit.log")).find("alice@") == std::string::npos);

  // The same event again (SendGrid retries): 200, and nothing recorded twice.
  auto again = post_sendgrid(h, keys.sendgrid, batch);
  REQUIRE(again);
  CHECK(again->status == 200);
  CHECK(body_of(again)["accepted"] == 0);
  CHECK(body_of(again)["duplicates"] == 1);
  CHECK(lines_of(h, "delivery").size() == 1);
  const std::string metrics = h.client().Get("/metrics")->body;
  CHECK(metrics.find("mailrelay_delivery_events_total{provider=\"sendgrid\",type=\"delivered\"} 1") != std::string::npos);
  CHECK(metrics.find("mailrelay_webhook_requests_total{provider=\"sendgrid\",outcome=\"duplicate\"} 1") != std::string::npos);
}

TEST_CASE("events: bad, missing and stale signatures get 401 and record nothing", "[events][api]") {
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras());
  const json batch = json::array({{{"email", "a@example.org"}, {"event", "bounce"}, {"type", "bounce"}, {"sg_event_id", "x"}}});
  fakes::EcKey stranger;
  check_error(post_sendgrid(h, stranger, batch), 401, "invalid_signature");
  check_error(h.client().Post("/v1/events/sendgrid", batch.dump(), "application/json"), 401, "invalid_signature");
  // 10 s past the 300 s window each way: the daemon reads its clock after the test, and a second
  // that ticks in between must not bring a stale timestamp back into the window.
  check_error(post_sendgrid(h, keys.sendgrid, batch, now_seconds() - 310), 401, "invalid_signature");
  check_error(post_sendgrid(h, keys.sendgrid, batch, now_seconds() + 310), 401, "invalid_signature");
  const json data = hard_bounce("a@example.org", "r1");
  check_error(post_mailgun(h, mailgun_body(data, "tok-1", now_seconds(), "another-signing-key")), 401, "invalid_signature");
  check_error(post_mailgun(h, mailgun_body(data, "tok-1", now_seconds() - 400)), 401, "invalid_signature");
  check_error(h.client().Post("/v1/events/mailgun", "not json", "application/json"), 401, "invalid_signature");
  json unsigned_body = mailgun_body(data, "tok-1");
  unsigned_body["signature"].erase("signature");
  check_error(post_mailgun(h, unsigned_body), 401, "invalid_signature");
  CHECK(lines_of(h, "delivery").empty());
  // Nothing was suppressed, and the replay ids were not taken: the real event still counts.
  CHECK(h.client().Get("/v1/suppressions/a@example.org")->status == 404);
  auto real = post_sendgrid(h, keys.sendgrid, batch);
  CHECK(real->status == 200);
  CHECK(body_of(real)["accepted"] == 1);
  // A signed body that is not a batch is a 400.
  check_error(post_sendgrid(h, keys.sendgrid, json::object()), 400, "invalid_request");
}

TEST_CASE("events: an endpoint without its key is 404, the webhooks take no bearer token", "[events][api]") {
  ApiHarness h({}, 10485760, true);  // tokens on, no webhook keys
  check_error(h.client().Post("/v1/events/sendgrid", "[]", "application/json"), 404, "not_found");
  check_error(h.client().Post("/v1/events/mailgun", "{}", "application/json"), 404, "not_found");
  check_error(h.client().Post("/v1/events/postmark", "{}", "application/json"), 404, "not_found");
  check_error(h.client().Post("/v1/events/other", "{}", "application/json"), 404, "not_found");
  check_error(h.client().Get("/v1/events/sendgrid"), 405, "method_not_allowed");

  Keys keys;
  ApiHarness signed_only({}, 10485760, true, keys.extras());
  auto r = post_mailgun(signed_only, mailgun_body(hard_bounce("a@example.org", "r"), "tok-9"));
  REQUIRE(r);
  CHECK(r->status == 200);  // no Authorization header: the signature is the credential
}

TEST_CASE("events: a bounce seen by Mailgun stops the next send through SendGrid, the audit log joins them",
          "[events][api]") {
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras());
  // A send goes out through SendGrid, stamped with its request id.
  auto sent = h.send(fakes::sample_request(), {{"X-Request-Id", "order-4711"}});
  REQUIRE(sent);
  REQUIRE(sent->status == 200);
  REQUIRE(h.sendgrid_server.count() == 1);
  CHECK(json::parse(h.sendgrid_server.received()[0].body)["custom_args"]["mailrelay_request_id"] == "order-4711");

  // Mailgun reports a hard bounce for bob (a message it carried for the same request).
  auto r = post_mailgun(h, mailgun_body(hard_bounce("Bob@Example.org", "order-4711"), "tok-1"));
  REQUIRE(r);
  CHECK(r->status == 200);

  // The next message naming bob is refused before any provider is asked.
  auto refused = h.send(fakes::sample_request(), {{"X-Request-Id", "order-4712"}});
  check_error(refused, 422, "recipient_suppressed");
  CHECK(body_of(refused)["error"]["field"] == "to[1]");
  CHECK(h.sendgrid_server.count() == 1);
  CHECK(h.mailgun_server.count() == 0);
  // A message without bob still goes.
  json to_alice = fakes::sample_request();
  to_alice["to"] = json::array({"alice@example.org"});
  CHECK(h.send(to_alice)->status == 200);

  // "What happened to the mail of order-4711?": attempt, request and delivery lines, by one grep.
  std::vector<std::string> events;
  for (const auto& line : h.audit_lines()) {
    if (line["request_id"] == "order-4711") events.push_back(line["event"]);
  }
  CHECK(events == std::vector<std::string>{"attempt", "request", "delivery"});
  const json bounce = lines_of(h, "delivery").at(0);
  CHECK(bounce["type"] == "bounced");
  CHECK(bounce["bounce_class"] == "hard");
  CHECK(bounce["provider"] == "mailgun");
  CHECK(bounce["recipient_hash"] == hash_address("fake-recipient-key-0123456789", "bob@example.org"));
  CHECK(bounce["reason"] == "550 5.1.1 <address> does not exist");
  CHECK(bounce["suppressed"] == true);
  // "Why did we not send to bob?": the refused request's line, and the suppression itself.
  json refused_line;
  for (const auto& line : lines_of(h, "request")) {
    if (line["request_id"] == "order-4712") refused_line = line;
  }
  CHECK(refused_line["outcome"] == "recipient_suppressed");
  CHECK(refused_line["status"] == 422);
  auto why = h.client().Get("/v1/suppressions/bob@example.org");
  REQUIRE(why);
  REQUIRE(why->status == 200);
  CHECK(body_of(why)["suppressed"] == true);
  CHECK(body_of(why)["type"] == "bounced");
  CHECK(body_of(why)["provider"] == "mailgun");
  CHECK(body_of(why)["reason"] == "550 5.1.1 <address> does not exist");
  CHECK(fakes::read_file(h.dir.file("audit.log")).find("bob@") == std::string::npos);
  CHECK(h.client().Get("/metrics")->body.find("mailrelay_suppressed_sends_total 1") != std::string::npos);
}

TEST_CASE("suppressions: the admin API looks up, adds and removes", "[events][api]") {
  ApiHarness h({}, 10485760, true);
  auto put = [&](const std::string& address, const json& body, const httplib::Headers& who) {
    return h.client().Put("/v1/suppressions/" + address, who, body.dump(), "application/json");
  };
  check_error(h.client().Get("/v1/suppressions/carol@example.org", kOps), 404, "not_found");
  check_error(put("carol@example.org", {{"reason", "asked by phone"}}, kBilling), 403, "forbidden");
  check_error(h.client().Get("/v1/suppressions/carol@example.org"), 401, "unauthorized");
  check_error(put("not-an-address", {{"reason", "x"}}, kOps), 400, "invalid_request");
  check_error(put("carol@example.org", {{"reason", 5}}, kOps), 400, "invalid_request");
  auto added = put("Carol@Example.org", {{"reason", "asked by phone"}}, kOps);
  REQUIRE(added);
  CHECK(added->status == 200);
  auto found = h.client().Get("/v1/suppressions/carol%40example.org", kOps);  // percent-encoded works too
  REQUIRE(found);
  REQUIRE(found->status == 200);
  CHECK(body_of(found)["type"] == "manual");
  CHECK(body_of(found)["reason"] == "asked by phone");
  CHECK(body_of(found)["provider"].is_null());
  CHECK_FALSE(body_of(found)["since"].get<std::string>().empty());
  json message = fakes::sample_request();
  message["to"] = json::array({"dave@example.org"});
  message["cc"] = json::array({"carol@example.org"});
  auto refused = h.send(message, kBilling);
  check_error(refused, 422, "recipient_suppressed");
  CHECK(body_of(refused)["error"]["field"] == "cc[0]");
  auto removed = h.client().Delete("/v1/suppressions/carol@example.org", kOps);
  REQUIRE(removed);
  CHECK(removed->status == 200);
  check_error(h.client().Delete("/v1/suppressions/carol@example.org", kOps), 404, "not_found");
  CHECK(h.send(message, kBilling)->status == 200);
  // Each change is a control line, with the address as domain and hash only.
  std::vector<std::string> actions;
  for (const auto& line : lines_of(h, "control")) {
    actions.push_back(line["action"]);
    CHECK(line["recipient_domain"] == "example.org");
    CHECK(line["recipient_hash"] == hash_address("fake-recipient-key-0123456789", "carol@example.org"));
    CHECK(line["client"] == "ops");
  }
  CHECK(actions == std::vector<std::string>{"suppress", "unsuppress"});
  CHECK(fakes::read_file(h.dir.file("audit.log")).find("carol@") == std::string::npos);
}

TEST_CASE("events: a batch the app does not take is answered 503 and counts again on retry", "[events][api]") {
  App app;
  app.statuses = {500};
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras(app.url()));
  const json data = hard_bounce("erin@example.org", "order-1");
  const json body = mailgun_body(data, "tok-forward");
  check_error(post_mailgun(h, body), 503, "forward_failed");
  CHECK(lines_of(h, "delivery").empty());
  // Mailgun retries the same request: the app takes it now, and it is recorded once.
  auto retried = post_mailgun(h, body);
  REQUIRE(retried);
  CHECK(retried->status == 200);
  CHECK(body_of(retried)["accepted"] == 1);
  CHECK(lines_of(h, "delivery").size() == 1);
  std::lock_guard<std::mutex> lock(app.mutex);
  REQUIRE(app.received.size() == 2);
  const auto& [signature, forwarded] = app.received[1];
  // t=<unix>,v1=<hex HMAC-SHA256(key, t + "." + body)>, checked here from the parts.
  const auto comma = signature.find(",v1=");
  REQUIRE(signature.rfind("t=", 0) == 0);
  REQUIRE(comma != std::string::npos);
  const std::string t = signature.substr(2, comma - 2);
  CHECK(signature.substr(comma + 4) == hmac_sha256_hex("fake-forward-key-0123456789", t + "." + forwarded));
  CHECK(std::llabs(std::stoll(t) - now_seconds()) < 60);
  const json events = json::parse(forwarded);
  REQUIRE(events.size() == 1);
  CHECK(events[0]["type"] == "bounced");
  CHECK(events[0]["request_id"] == "order-1");
  CHECK(forwarded.find("erin@") == std::string::npos);
}

TEST_CASE("events with Redis: a suppression learned by one instance holds on another", "[events][api][redis]") {
  fakes::RedisServer redis;
  Keys keys;
  auto extras = [&] {
    static auto log = std::make_shared<spdlog::logger>("t");
    ApiHarness::Extras e = keys.extras();
    e.state_store = std::move(RedisStateStore::open({redis.url(), "", "t:", std::chrono::milliseconds(200), 0}, *log).value());
    return e;
  };
  ApiHarness a({}, 10485760, false, extras());
  ApiHarness b({}, 10485760, false, extras());
  const json body = mailgun_body(hard_bounce("frank@example.org", "r-1"), "tok-redis");
  REQUIRE(post_mailgun(a, body)->status == 200);
  // The replay reaches the other instance: still one event.
  auto replay = post_mailgun(b, body);
  CHECK(body_of(replay)["duplicates"] == 1);
  json message = fakes::sample_request();
  message["to"] = json::array({"frank@example.org"});
  check_error(b.send(message), 422, "recipient_suppressed");
  CHECK(b.sendgrid_server.count() == 0);
  // The store holds the hash, never the address.
  const std::string keys_text = redis.cli({"KEYS", "t:*"});
  CHECK(keys_text.find("frank") == std::string::npos);
  CHECK(keys_text.find("t:supp:" + suppression_hash("fake-recipient-key-0123456789", "frank@example.org")) !=
        std::string::npos);
}

TEST_CASE("events: Postmark's basic-auth webhook, a spam complaint suppresses", "[events][api]") {
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras());
  // Shape from https://postmarkapp.com/email-webhooks (spam complaint webhook).
  const json complaint{{"RecordType", "SpamComplaint"}, {"ID", 42}, {"Type", "SpamComplaint"},
                       {"MessageID", "883953f4-6105-42a2-a16a-77a8eac79483"}, {"Email", "grace@example.org"},
                       {"BouncedAt", "2026-12-03T06:28:10.2735393-04:00"},
                       {"Metadata", {{"mailrelay_request_id", "order-9"}}}};
  auto unauthenticated = h.client().Post("/v1/events/postmark", complaint.dump(), "application/json");
  check_error(unauthenticated, 401, "invalid_signature");
  CHECK(unauthenticated->get_header_value("WWW-Authenticate").rfind("Basic", 0) == 0);
  httplib::Client wrong = h.client();
  wrong.set_basic_auth("postmark", "guessed");
  check_error(wrong.Post("/v1/events/postmark", complaint.dump(), "application/json"), 401, "invalid_signature");
  httplib::Client postmark = h.client();
  postmark.set_basic_auth("postmark", "fake-webhook-password");
  auto r = postmark.Post("/v1/events/postmark", complaint.dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(body_of(postmark.Post("/v1/events/postmark", complaint.dump(), "application/json"))["duplicates"] == 1);
  auto lines = lines_of(h, "delivery");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["type"] == "complained");
  CHECK(lines[0]["request_id"] == "order-9");
  CHECK(lines[0]["provider_event_id"] == "42");
  json message = fakes::sample_request();
  message["to"] = json::array({"grace@example.org"});
  check_error(h.send(message), 422, "recipient_suppressed");
  // A delivery (no ID): a retry of the same record is still recognised.
  const json delivered{{"RecordType", "Delivery"}, {"MessageID", "m-2"}, {"Recipient", "heidi@example.org"},
                       {"DeliveredAt", "2026-12-03T06:30:00Z"}, {"Details", "Test delivery webhook details"}};
  CHECK(body_of(postmark.Post("/v1/events/postmark", delivered.dump(), "application/json"))["accepted"] == 1);
  CHECK(body_of(postmark.Post("/v1/events/postmark", delivered.dump(), "application/json"))["duplicates"] == 1);
}

TEST_CASE("events: a SendGrid event without sg_event_id is still recognised as a replay", "[events][api][hostile]") {
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras());
  const json batch = json::array({{{"email", "alice@example.org"}, {"timestamp", now_seconds()}, {"event", "delivered"},
                                   {"sg_message_id", "msg-2.filter"}}});
  auto first = post_sendgrid(h, keys.sendgrid, batch);
  REQUIRE(first);
  CHECK(body_of(first)["accepted"] == 1);
  auto again = post_sendgrid(h, keys.sendgrid, batch);  // within the 300 s window, signed anew
  REQUIRE(again);
  CHECK(again->status == 200);
  CHECK(body_of(again)["accepted"] == 0);
  CHECK(body_of(again)["duplicates"] == 1);
  // Another event without an id is not taken for the first one.
  json other = batch;
  other[0]["event"] = "open";
  CHECK(body_of(post_sendgrid(h, keys.sendgrid, other))["accepted"] == 1);
  CHECK(lines_of(h, "delivery").size() == 2);
}

TEST_CASE("events: deep webhook bodies are refused before parsing, Mailgun's second signature is refused",
          "[events][api][hostile]") {
  Keys keys;
  ApiHarness h({}, 10485760, false, keys.extras());
  // Unsigned, deep: 400 before any parse (a DOM of a million '[' took 750 MB).
  auto deep = h.client().Post("/v1/events/mailgun", std::string(1000000, '['), "application/json");
  check_error(deep, 400, "invalid_request");
  CHECK(body_of(deep)["error"]["message"].get<std::string>().find("nested deeper") != std::string::npos);
  // Over the webhook limit (1 MiB): 413 from the head. cpp-httplib's client asks to close and
  // goes on sending the body: the daemon drains it rather than resetting the connection, so the
  // client always reads the answer (it got a write error about half the time before).
  for (int i = 0; i < 10; ++i) {
    check_error(h.client().Post("/v1/events/sendgrid", std::string(1048577, ' '), "application/json"), 413,
                "payload_too_large");
  }
  // A valid signature followed by a second "signature" member naming a fresh token: the verified
  // token and the replay id would differ. Refused.
  json body = mailgun_body(hard_bounce("bob@example.org", "r-1"), "token-1");
  std::string text = body.dump();
  text.insert(text.size() - 1, R"(,"signature":{"timestamp":"1","token":"token-2","signature":"00"})");
  check_error(h.client().Post("/v1/events/mailgun", text, "application/json"), 401, "invalid_signature");
  // Signed members are read even after large unsigned ones; the event then counts once.
  body["event-data"]["padding"] = std::string(100000, 'x');
  auto ok = post_mailgun(h, body);
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(body_of(ok)["accepted"] == 1);
  CHECK(lines_of(h, "delivery").size() == 1);
}
