// Runtime control and client limits over HTTP (README "Running several instances" and "Other endpoints"): switching providers off
// and on, the order, scopes, control audit lines, rate limits, and a state store that is down.
#include <catch2/catch.hpp>

#include "api_harness.h"
#include "redis_server.h"
#include "redis_state_store.h"

using namespace mailrelay;
using fakes::ApiHarness;
using nlohmann::json;
using fakes::body_of;
using fakes::check_error;
using std::chrono::milliseconds;

namespace {

const httplib::Headers kOps{{"Authorization", "Bearer ops-token-0123456789abcd"}};
const httplib::Headers kBilling{{"Authorization", "Bearer billing-token-0123456789"}};

httplib::Result patch(ApiHarness& h, const std::string& name, const json& body, const httplib::Headers& headers = {}) {
  return h.client().Patch("/v1/providers/" + name, headers, body.dump(), "application/json");
}

// Harness options with a Redis state store on `redis`, keys under "t:".
ApiHarness::Extras redis_extras(const fakes::RedisServer& redis, milliseconds timeout) {
  static auto log = std::make_shared<spdlog::logger>("t");
  ApiHarness::Extras extras;
  extras.state_store = std::move(RedisStateStore::open({redis.url(), "", "t:", timeout, 0}, *log).value());
  return extras;
}

std::vector<json> lines_of(ApiHarness& h, const std::string& event) {
  std::vector<json> out;
  for (auto& l : h.audit_lines()) {
    if (l["event"] == event) out.push_back(l);
  }
  return out;
}

}  // namespace

TEST_CASE("control: switch SendGrid off, mail goes through Mailgun, the view and the audit say who and why",
          "[control]") {
  ApiHarness h;
  auto off = patch(h, "sendgrid", {{"enabled", false}, {"reason", "SendGrid incident 1234"}});
  REQUIRE(off);
  REQUIRE(off->status == 200);
  json view = body_of(off);
  CHECK(view["providers"][0]["name"] == "sendgrid");
  CHECK(view["providers"][0]["enabled"] == false);
  CHECK(view["providers"][0]["reason"] == "SendGrid incident 1234");
  CHECK(view["providers"][0]["disabled_by"].is_null());  // a loopback caller without tokens
  CHECK(view["providers"][0]["since"].get<std::string>().size() == 24);
  CHECK(view["providers"][1]["enabled"] == true);

  auto sent = h.send(fakes::sample_request());
  REQUIRE(sent);
  REQUIRE(sent->status == 200);
  json answer = body_of(sent);
  CHECK(answer["provider"] == "mailgun");
  CHECK(answer["attempts"][0]["outcome"] == "skipped");
  CHECK(answer["attempts"][0]["error"] == "switched off by an operator: SendGrid incident 1234");
  CHECK(h.sendgrid_server.count() == 0);
  CHECK(h.mailgun_server.count() == 1);

  auto control = lines_of(h, "control");
  REQUIRE(control.size() == 1);
  CHECK(control[0]["action"] == "disable");
  CHECK(control[0]["provider"] == "sendgrid");
  CHECK(control[0]["reason"] == "SendGrid incident 1234");
  CHECK(control[0]["client_ip"] == "127.0.0.1");
  CHECK(control[0]["request_id"] == view["request_id"]);

  CHECK(h.client().Get("/readyz")->status == 200);  // Mailgun can still be tried

  // Both off: nothing to send with, and /readyz says so (a load balancer moves traffic away).
  REQUIRE(patch(h, "mailgun", {{"enabled", false}})->status == 200);
  check_error(h.send(fakes::sample_request()), 503, "no_provider_available");
  CHECK(h.mailgun_server.count() == 1);
  auto ready = h.client().Get("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK(body_of(ready)["status"] == "no_provider_available");
  CHECK(body_of(ready)["reason"] ==
        "no provider can be tried: sendgrid: switched off by an operator; mailgun: switched off by an operator");

  // Back on.
  REQUIRE(patch(h, "sendgrid", {{"enabled", true}, {"reason", "resolved"}})->status == 200);
  CHECK(h.client().Get("/readyz")->status == 200);
  auto again = h.send(fakes::sample_request());
  REQUIRE(again->status == 200);
  CHECK(body_of(again)["provider"] == "sendgrid");
  json providers = body_of(h.client().Get("/v1/providers"));
  CHECK(providers["providers"][0]["enabled"] == true);
  CHECK(providers["providers"][0]["disabled_by"].is_null());
  CHECK(providers["providers"][0]["reason"] == "resolved");
  CHECK(providers["providers"][1]["enabled"] == false);
  CHECK(lines_of(h, "control").size() == 3);
}

TEST_CASE("control: the order, set and reset", "[control]") {
  ApiHarness h;
  auto set = h.client().Put("/v1/providers/order", json{{"order", {"mailgun", "sendgrid"}}}.dump(), "application/json");
  REQUIRE(set);
  REQUIRE(set->status == 200);
  CHECK(body_of(set)["order"] == json({"mailgun", "sendgrid"}));
  CHECK(body_of(set)["order_overridden"] == true);
  CHECK(body_of(h.send(fakes::sample_request()))["provider"] == "mailgun");
  // One provider named: it goes first, the others follow as configured.
  REQUIRE(h.client().Put("/v1/providers/order", json{{"order", {"mailgun"}}}.dump(), "application/json")->status == 200);
  CHECK(body_of(h.client().Get("/v1/providers"))["order"] == json({"mailgun", "sendgrid"}));
  auto reset = h.client().Delete("/v1/providers/order");
  REQUIRE(reset);
  REQUIRE(reset->status == 200);
  CHECK(body_of(reset)["order"] == json({"sendgrid", "mailgun"}));
  CHECK(body_of(reset)["order_overridden"] == false);
  CHECK(body_of(h.send(fakes::sample_request()))["provider"] == "sendgrid");
  auto control = lines_of(h, "control");
  REQUIRE(control.size() == 3);
  CHECK(control[0]["action"] == "set_order");
  CHECK(control[0]["order"] == json({"mailgun", "sendgrid"}));
  CHECK(control[2]["action"] == "reset_order");
}

TEST_CASE("control: bad requests are refused with the field, and change nothing", "[control]") {
  ApiHarness h;
  check_error(patch(h, "sparkpost", {{"enabled", false}}), 404, "not_found");
  check_error(patch(h, "sendgrid", {{"enabled", "no"}}), 400, "invalid_request");
  CHECK(body_of(patch(h, "sendgrid", {{"enabled", "no"}}))["error"]["field"] == "enabled");
  CHECK(body_of(patch(h, "sendgrid", {{"enabled", false}, {"reason", std::string(201, 'x')}}))["error"]["field"] == "reason");
  CHECK(body_of(patch(h, "sendgrid", {{"enabled", false}, {"reason", "a\nb"}}))["error"]["field"] == "reason");
  check_error(h.client().Patch("/v1/providers/sendgrid", "{not json", "application/json"), 400, "invalid_request");
  check_error(h.client().Patch("/v1/providers/sendgrid", "enabled=false", "text/plain"), 415, "unsupported_media_type");
  auto put = [&](const json& body) { return h.client().Put("/v1/providers/order", body.dump(), "application/json"); };
  check_error(put({{"order", json::array()}}), 400, "invalid_request");
  check_error(put({{"order", {"sendgrid", "sendgrid"}}}), 400, "invalid_request");
  CHECK(body_of(put({{"order", {"sendgrid", "sendgrid"}}}))["error"]["field"] == "order[1]");
  check_error(put({{"order", {"mailgun", "sparkpost"}}}), 404, "not_found");
  check_error(put({{"order", {"mailgun", 7}}}), 400, "invalid_request");
  // Methods: 405 with Allow.
  auto get_one = h.client().Get("/v1/providers/sendgrid");
  REQUIRE(get_one);
  CHECK(get_one->status == 405);
  CHECK(get_one->get_header_value("Allow") == "PATCH");
  auto post_order = h.client().Post("/v1/providers/order", "{}", "application/json");
  CHECK(post_order->status == 405);
  CHECK(post_order->get_header_value("Allow") == "PUT, DELETE");
  // Nothing changed.
  json view = body_of(h.client().Get("/v1/providers"));
  CHECK(view["providers"][0]["enabled"] == true);
  CHECK(view["order_overridden"] == false);
  CHECK(lines_of(h, "control").empty());
}

TEST_CASE("control: scopes from the tokens file, admin only for changes, send only for sends", "[control][auth]") {
  ApiHarness h({}, 10485760, true);
  check_error(patch(h, "sendgrid", {{"enabled", false}}), 401, "unauthorized");
  check_error(patch(h, "sendgrid", {{"enabled", false}}, kBilling), 403, "forbidden");
  check_error(h.client().Delete("/v1/providers/order", kBilling), 403, "forbidden");
  auto off = patch(h, "sendgrid", {{"enabled", false}, {"reason", "incident"}}, kOps);
  REQUIRE(off);
  REQUIRE(off->status == 200);
  CHECK(body_of(off)["providers"][0]["disabled_by"] == "ops");
  CHECK(lines_of(h, "control").at(0)["client"] == "ops");
  // The ops token has the admin scope only: it cannot send.
  check_error(h.send(fakes::sample_request(), kOps), 403, "forbidden");
  auto sent = h.send(fakes::sample_request(), kBilling);
  REQUIRE(sent->status == 200);
  CHECK(body_of(sent)["provider"] == "mailgun");
}

TEST_CASE("rate limits: over the limit is 429 with Retry-After, no provider call, audited", "[control][rate]") {
  ApiHarness::Extras extras;
  extras.client_rates = {{"billing", RateLimit{2, std::chrono::minutes(1)}}, {"*", RateLimit{1000, milliseconds(1000)}}};
  ApiHarness h({}, 10485760, true, std::move(extras));
  // 2 a minute: a burst of 1, then one every 30 s.
  REQUIRE(h.send(fakes::sample_request(), kBilling)->status == 200);
  auto limited = h.send(fakes::sample_request(), kBilling);
  check_error(limited, 429, "rate_limited");
  const int retry_after = std::stoi(limited->get_header_value("Retry-After"));
  CHECK(retry_after >= 29);
  CHECK(retry_after <= 30);
  CHECK(h.sendgrid_server.count() == 1);
  // Another client has its own bucket (here the "*" one).
  REQUIRE(h.send(fakes::sample_request(), {{"Authorization", "Bearer shop-token-0123456789ab"}})->status == 200);
  auto requests = lines_of(h, "request");
  REQUIRE(requests.size() == 3);
  CHECK(requests[1]["status"] == 429);
  CHECK(requests[1]["outcome"] == "rate_limited");
  CHECK(requests[1]["refused_by"] == "rate_limit");
  CHECK(requests[1]["client"] == "billing");
  CHECK(h.client().Get("/metrics")->body.find("mailrelay_refused_total{limit=\"rate_limit\"} 1") != std::string::npos);
}

TEST_CASE("state store down: a keyed send is refused 503, an unkeyed one goes out and says so", "[control][redis]") {
  fakes::RedisServer redis;
  ApiHarness::Extras extras = redis_extras(redis, milliseconds(100));
  extras.client_rates = {{"*", RateLimit{1000, milliseconds(1000)}}};
  ApiHarness h({}, 10485760, false, std::move(extras));
  httplib::Headers keyed{{"Idempotency-Key", "order-1"}};
  REQUIRE(h.send(fakes::sample_request(), keyed)->status == 200);
  redis.kill();
  auto refused = h.send(fakes::sample_request(), {{"Idempotency-Key", "order-2"}});
  check_error(refused, 503, "state_store_unavailable");
  CHECK(refused->get_header_value("Retry-After") == "1");
  CHECK(h.sendgrid_server.count() == 1);
  auto unkeyed = h.send(fakes::sample_request());
  REQUIRE(unkeyed);
  CHECK(unkeyed->status == 200);  // the rate limit fails open
  CHECK(h.sendgrid_server.count() == 2);
  auto requests = lines_of(h, "request");
  REQUIRE(requests.size() == 3);
  CHECK(requests[1]["state_store"] == "unavailable");
  CHECK(requests[2]["state_store"] == "unavailable");
  CHECK_FALSE(requests[0].contains("state_store"));
  // Health stays green; the metrics say what is wrong.
  CHECK(h.client().Get("/readyz")->status == 200);
  const std::string metrics = h.client().Get("/metrics")->body;
  CHECK(metrics.find("\nmailrelay_state_store_up 0\n") != std::string::npos);
  CHECK(metrics.find("\nmailrelay_state_store_errors_total 0\n") == std::string::npos);
  // A change cannot be stored: refused, nothing changed.
  check_error(patch(h, "sendgrid", {{"enabled", false}}), 503, "state_store_unavailable");
  // Back by itself: keyed sends work again (this Redis keeps nothing across its restart).
  redis.restart();
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {  // at most 5 s
    std::this_thread::sleep_for(milliseconds(50));
    status = h.send(fakes::sample_request(), keyed)->status;
  }
  CHECK(status == 200);
  CHECK(h.client().Get("/metrics")->body.find("\nmailrelay_state_store_up 1\n") != std::string::npos);
}

TEST_CASE("Redis holds no address: the stored answer has provider text redacted, the key hashed", "[control][redis]") {
  fakes::RedisServer redis;
  ApiHarness::Extras extras = redis_extras(redis, milliseconds(200));
  ApiHarness h({}, 10485760, false, std::move(extras));
  h.sendgrid_server.push(fakes::reply(400, R"({"errors":[{"message":"Does not contain a valid address: alice@example.org","field":"personalizations.0.to.0.email"}]})"));
  auto sent = h.send(fakes::sample_request(), {{"Idempotency-Key", "order-alice"}});
  REQUIRE(sent);
  REQUIRE(sent->status == 200);
  CHECK(sent->body.find("alice@example.org") != std::string::npos);  // the caller's own answer keeps it
  const std::string keys = redis.cli({"--scan", "--pattern", "t:idem:*"});
  REQUIRE_FALSE(keys.empty());
  CHECK(keys.find("order-alice") == std::string::npos);
  const std::string stored = redis.cli({"GET", keys.substr(0, keys.find('\n'))});
  CHECK(stored.find("<address>") != std::string::npos);
  CHECK(stored.find("alice@example.org") == std::string::npos);
  auto replay = h.send(fakes::sample_request(), {{"Idempotency-Key", "order-alice"}});
  REQUIRE(replay);
  CHECK(replay->get_header_value("Idempotent-Replayed") == "true");
  CHECK(json::parse(replay->body)["attempts"][0]["error"].get<std::string>().find("<address>") != std::string::npos);
}
