#include <catch2/catch.hpp>

#include <thread>

#include "api_harness.h"
#include "request_id.h"

using namespace mailrelay;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

using fakes::ApiHarness;
using fakes::body_of;
using fakes::check_error;

}  // namespace

TEST_CASE("200: SendGrid accepts, body lists the attempt, request id echoed", "[http_api]") {
  ApiHarness h;
  auto r = h.send(fakes::sample_request(), {{"X-Request-Id", "caller-id.1:2_3-4"}});
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("X-Request-Id") == "caller-id.1:2_3-4");
  json b = body_of(r);
  CHECK(b["request_id"] == "caller-id.1:2_3-4");
  CHECK(b["status"] == "sent");
  CHECK(b["provider"] == "sendgrid");
  CHECK_THAT(b["provider_message_id"].get<std::string>(), Catch::StartsWith("fake-sg-"));
  REQUIRE(b["attempts"].size() == 1);
  CHECK(b["attempts"][0]["outcome"] == "sent");
  CHECK(b["attempts"][0]["http_status"] == 202);
  CHECK(b["attempts"][0]["try"] == 1);
  CHECK(b["attempts"][0]["latency_ms"].is_number());
  CHECK(h.mailgun_server.count() == 0);
}

TEST_CASE("an unsafe or missing X-Request-Id is replaced by a fresh id", "[http_api]") {
  ApiHarness h;
  auto bad = GENERATE(as<std::string>{}, "", "has space", "semi;colon", std::string(129, 'a'));
  httplib::Headers headers;
  if (!bad.empty()) headers.emplace("X-Request-Id", bad);
  auto r = h.send(fakes::sample_request(), headers);
  REQUIRE(r);
  std::string id = r->get_header_value("X-Request-Id");
  CHECK(id != bad);
  CHECK(is_acceptable_request_id(id));
  CHECK(id.size() == 26);
  CHECK(body_of(r)["request_id"] == id);
}

TEST_CASE("200 after failover: SendGrid 503 twice, Mailgun accepts", "[http_api]") {
  ApiHarness h;
  auto unavailable = fakes::reply(503, "Service Unavailable", "text/plain");
  h.sendgrid_server.push_n(2, unavailable);
  auto r = h.send(fakes::sample_request());
  REQUIRE(r);
  CHECK(r->status == 200);
  json b = body_of(r);
  CHECK(b["provider"] == "mailgun");
  CHECK_THAT(b["provider_message_id"].get<std::string>(), Catch::EndsWith("@mg.example.com>"));
  REQUIRE(b["attempts"].size() == 3);
  CHECK(b["attempts"][0]["outcome"] == "error");
  CHECK(b["attempts"][0]["http_status"] == 503);
  CHECK(b["attempts"][0]["error"] == "Service Unavailable");
  CHECK(b["attempts"][2]["provider"] == "mailgun");
  // What Mailgun received is the real form, with the recipients as separate fields.
  auto got = h.mailgun_server.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].form_values("to") == std::vector<std::string>{"alice@example.org", "Bob <bob@example.org>"});
}

TEST_CASE("duplicate recipients never cause a SendGrid 400 and a needless failover", "[http_api]") {
  ApiHarness h;
  json req = fakes::sample_request();
  req["cc"] = {"ALICE@example.org"};
  auto r = h.send(req);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(body_of(r)["provider"] == "sendgrid");
  CHECK(h.mailgun_server.count() == 0);
}

TEST_CASE("502: every provider refuses", "[http_api]") {
  ApiHarness h;
  auto bad_request = fakes::reply(400, R"({"errors":[{"message":"The from address does not match a verified Sender Identity.","field":"from","help":null}]})");
  h.sendgrid_server.push(bad_request);
  auto forbidden = fakes::reply(401, "Forbidden", "text/plain");
  h.mailgun_server.push_n(2, forbidden);
  auto r = h.send(fakes::sample_request());
  check_error(r, 502, "all_providers_failed");
  json b = body_of(r);
  REQUIRE(b["attempts"].size() == 3);
  CHECK(b["attempts"][0]["outcome"] == "rejected");
  CHECK(b["attempts"][1]["error"] == "Forbidden");
  CHECK(b["attempts"][1]["outcome"] == "error");
}

TEST_CASE("504: the deadline runs out while providers hang", "[http_api]") {
  RelaySettings settings;
  settings.attempt_timeout = milliseconds(300);
  settings.deadline = milliseconds(500);
  ApiHarness h(settings);
  h.sendgrid_server.push(fakes::hang());
  h.mailgun_server.push(fakes::hang());
  auto r = h.send(fakes::sample_request());
  check_error(r, 504, "deadline_exceeded");
  json b = body_of(r);
  REQUIRE(b["attempts"].size() == 2);
  CHECK(b["attempts"][0]["outcome"] == "timeout");
  CHECK(b["attempts"][0]["may_have_been_sent"] == true);
}

TEST_CASE("504 without failover when --failover-on-timeout=false", "[http_api]") {
  RelaySettings settings;
  settings.attempt_timeout = milliseconds(300);
  settings.policy.failover_on_timeout = false;
  ApiHarness h(settings);
  h.sendgrid_server.push(fakes::hang());
  auto r = h.send(fakes::sample_request());
  check_error(r, 504, "deadline_exceeded");
  CHECK_THAT(body_of(r)["error"]["message"].get<std::string>(), Catch::Contains("may have accepted"));
  CHECK(body_of(r)["attempts"].size() == 1);
  CHECK(h.mailgun_server.count() == 0);
}

TEST_CASE("400: invalid JSON and invalid fields, with the field path, no provider called", "[http_api]") {
  ApiHarness h;
  auto r = h.client().Post("/v1/send", "{not json", "application/json");
  check_error(r, 400, "invalid_request");
  json bad = fakes::sample_request();
  bad["to"][1] = "nope";
  auto r2 = h.send(bad);
  check_error(r2, 400, "invalid_request");
  CHECK(body_of(r2)["error"]["field"] == "to[1]");
  CHECK(h.sendgrid_server.count() == 0);
  CHECK(h.mailgun_server.count() == 0);
}

TEST_CASE("415: a body that is not declared as JSON", "[http_api]") {
  ApiHarness h;
  auto r = h.client().Post("/v1/send", fakes::sample_request().dump(), "text/plain");
  check_error(r, 415, "unsupported_media_type");
  auto ok = h.client().Post("/v1/send", fakes::sample_request().dump(), "application/json; charset=utf-8");
  REQUIRE(ok);
  CHECK(ok->status == 200);
}

TEST_CASE("413: a body over --max-body-bytes", "[http_api]") {
  ApiHarness h({}, 1024);
  json big = fakes::sample_request();
  big["text"] = std::string(4096, 'x');
  check_error(h.send(big), 413, "payload_too_large");
  CHECK(h.sendgrid_server.count() == 0);
}

TEST_CASE("404 and 405 are JSON too", "[http_api]") {
  ApiHarness h;
  check_error(h.client().Get("/nope"), 404, "not_found");
  auto r = h.client().Get("/v1/send");
  check_error(r, 405, "method_not_allowed");
  CHECK(r->get_header_value("Allow") == "POST");
  check_error(h.client().Delete("/v1/send"), 405, "method_not_allowed");
  check_error(h.client().Post("/healthz", "", "application/json"), 405, "method_not_allowed");
  auto health = h.client().Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(body_of(health)["status"] == "ok");
}

TEST_CASE("401: tokens configured, bearer missing, wrong or right", "[http_api]") {
  ApiHarness h({}, 10485760, true);
  check_error(h.send(fakes::sample_request()), 401, "unauthorized");
  check_error(h.send(fakes::sample_request(), {{"Authorization", "Bearer wrong-token-0123456789"}}), 401, "unauthorized");
  check_error(h.send(fakes::sample_request(), {{"Authorization", "Basic billing-token-0123456789"}}), 401, "unauthorized");
  auto ok = h.send(fakes::sample_request(), {{"Authorization", "Bearer billing-token-0123456789"}});
  REQUIRE(ok);
  CHECK(ok->status == 200);
  // Authentication comes before validation: an unauthenticated caller learns nothing else.
  check_error(h.client().Post("/v1/send", "{", "application/json"), 401, "unauthorized");
}

TEST_CASE("audit: a request line with every key, typed, for 200, 400, 401, 502 and 504", "[http_api][audit]") {
  // Timeouts long enough for a sanitizer build's first send; the 504 below takes the 3 s.
  RelaySettings settings;
  settings.attempt_timeout = milliseconds(2000);
  settings.deadline = milliseconds(3000);
  ApiHarness h(settings, 10485760, true);
  httplib::Headers auth{{"Authorization", "Bearer billing-token-0123456789"}};
  json bad = fakes::sample_request();
  bad.erase("subject");

  REQUIRE(h.send(fakes::sample_request(), auth)->status == 200);
  REQUIRE(h.send(bad, auth)->status == 400);
  REQUIRE(h.send(fakes::sample_request())->status == 401);
  h.sendgrid_server.push(fakes::reply(400, R"({"errors":[{"message":"bad from"}]})"));
  h.mailgun_server.push(fakes::reply(400, R"({"message":"bad from"})"));
  REQUIRE(h.send(fakes::sample_request(), auth)->status == 502);
  h.sendgrid_server.push(fakes::hang());
  h.mailgun_server.push(fakes::hang());
  REQUIRE(h.send(fakes::sample_request(), auth)->status == 504);

  auto lines = h.audit_lines();
  std::vector<json> requests;
  for (const auto& l : lines) {
    if (l["event"] == "request") requests.push_back(l);
  }
  REQUIRE(requests.size() == 5);
  std::vector<int> statuses;
  for (const auto& r : requests) {
    CAPTURE(r.dump());
    statuses.push_back(r["status"]);
    CHECK(r["ts"].is_string());
    CHECK(r["request_id"].is_string());
    CHECK(r["client_ip"] == "127.0.0.1");
    CHECK((r["client"].is_string() || r["client"].is_null()));
    CHECK(r["method"] == "POST");
    CHECK(r["path"] == "/v1/send");
    CHECK(r["outcome"].is_string());
    CHECK((r["provider"].is_string() || r["provider"].is_null()));
    CHECK((r["provider_message_id"].is_string() || r["provider_message_id"].is_null()));
    CHECK(r["latency_ms"].is_number());
    CHECK(r["retries"].is_number_integer());
    CHECK(r["attempts"].is_array());
    CHECK(r["recipients"].is_number_integer());
    CHECK(r.contains("stop_reason"));
    // Every attempt in the request line has its own attempt line, written before it.
    std::size_t request_at = 0, attempt_lines = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i]["request_id"] != r["request_id"]) continue;
      if (lines[i]["event"] == "attempt") {
        ++attempt_lines;
        CHECK(request_at == 0);
      } else {
        request_at = i;
      }
    }
    CHECK(attempt_lines == r["attempts"].size());
  }
  CHECK(statuses == std::vector<int>{200, 400, 401, 502, 504});
  CHECK(requests[0]["client"] == "billing");
  CHECK(requests[0]["outcome"] == "sent");
  CHECK(requests[0]["provider"] == "sendgrid");
  CHECK(requests[0]["stop_reason"] == "accepted");
  CHECK(requests[0]["recipients"] == 2);
  CHECK(requests[0]["recipient_hashes"][0] == hash_address("fake-recipient-key-0123456789", "alice@example.org"));
  CHECK(requests[1]["outcome"] == "invalid_request");
  CHECK(requests[2]["client"].is_null());
  CHECK(requests[2]["outcome"] == "unauthorized");
  CHECK(requests[3]["outcome"] == "all_providers_failed");
  CHECK(requests[3]["stop_reason"] == "rejected_by_all");
  CHECK(requests[4]["outcome"] == "deadline_exceeded");
  CHECK(requests[4]["stop_reason"] == "deadline");
  CHECK(requests[4]["retries"] == 1);
}

TEST_CASE("audit: 404, 405 and 413 leave a request line too, health checks do not", "[http_api][audit]") {
  ApiHarness h({}, 1024);
  json big = fakes::sample_request();
  big["text"] = std::string(4096, 'x');
  h.client().Get("/nope");
  h.client().Get("/v1/send");
  h.send(big);
  h.client().Get("/healthz");
  auto lines = h.audit_lines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["status"] == 404);
  CHECK(lines[1]["status"] == 405);
  CHECK(lines[2]["status"] == 413);
  CHECK(lines[2]["outcome"] == "payload_too_large");
}

TEST_CASE("audit: the log holds no subject, body, attachment, address, token or key", "[http_api][audit]") {
  ApiHarness h({}, 10485760, true);
  json req = fakes::sample_request();
  req["from"] = "Secret Sender <sender-pii@example.com>";
  req["to"] = {"Recipient Person <recipient-pii@example.org>"};
  req["cc"] = {"cc-pii@example.net"};
  req["subject"] = "Subject-Secret-7781";
  req["text"] = "Body-Secret-9913";
  req["html"] = "<p>Html-Secret-5531</p>";
  req["attachments"] = {{{"filename", "f.txt"}, {"content", "QXR0YWNobWVudC1TZWNyZXQ="}}};  // Attachment-Secret
  // SendGrid refuses with a message naming the recipient; Mailgun takes it.
  h.sendgrid_server.push(fakes::reply(400, R"({"errors":[{"message":"Invalid address recipient-pii@example.org"}]})"));
  auto r = h.send(req, {{"Authorization", "Bearer billing-token-0123456789"}});
  REQUIRE(r);
  REQUIRE(r->status == 200);
  std::string log = fakes::read_file(h.dir.file("audit.log"));
  REQUIRE_FALSE(log.empty());
  for (const char* secret : {"sender-pii", "recipient-pii", "cc-pii", "Secret Sender", "Recipient Person",
                             "Subject-Secret", "Body-Secret", "Html-Secret", "Attachment-Secret",
                             "QXR0YWNobWVudC1TZWNyZXQ", "billing-token-0123456789", fakes::kSendGridKey,
                             fakes::kMailgunKey, "fake-recipient-key-0123456789"}) {
    CAPTURE(secret);
    CHECK(log.find(secret) == std::string::npos);
  }
  CHECK(log.find("example.org") != std::string::npos);  // the recipient domain is there, on purpose
}

namespace {
// The value of one sample line in Prometheus text ("name{labels} value"), or -1 when absent.
double sample(const std::string& text, const std::string& series) {
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}
}  // namespace

TEST_CASE("metrics move as traffic flows", "[http_api][metrics]") {
  ApiHarness h;
  std::string before = h.client().Get("/metrics")->body;
  CHECK(sample(before, "mailrelay_failovers_total") == 0);
  CHECK(sample(before, R"(mailrelay_requests_total{route="/v1/send",status="200"})") == -1);

  REQUIRE(h.send(fakes::sample_request())->status == 200);
  h.sendgrid_server.push_n(2, fakes::reply(503, "Service Unavailable", "text/plain"));
  REQUIRE(h.send(fakes::sample_request())->status == 200);
  REQUIRE(h.client().Get("/nope")->status == 404);
  REQUIRE(h.send(json{{"from", "a@example.com"}})->status == 400);  // refused before any call

  auto r = h.client().Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK_THAT(r->get_header_value("Content-Type"), Catch::StartsWith("text/plain"));
  const std::string& m = r->body;
  INFO(m);
  CHECK(sample(m, R"(mailrelay_requests_total{route="/v1/send",status="200"})") == 2);
  CHECK(sample(m, R"(mailrelay_requests_total{route="other",status="404"})") == 1);
  CHECK(sample(m, R"(mailrelay_attempts_total{provider="sendgrid",outcome="sent"})") == 1);
  CHECK(sample(m, R"(mailrelay_attempts_total{provider="sendgrid",outcome="error"})") == 2);
  CHECK(sample(m, R"(mailrelay_attempts_total{provider="mailgun",outcome="sent"})") == 1);
  CHECK(sample(m, "mailrelay_failovers_total") == 1);
  CHECK(sample(m, R"(mailrelay_requests_total{route="/v1/send",status="400"})") == 1);
  CHECK(sample(m, "mailrelay_send_duration_seconds_count") == 2);  // the 400 called no provider
  CHECK(sample(m, R"(mailrelay_provider_latency_seconds_count{provider="sendgrid"})") == 3);
  CHECK(sample(m, R"(mailrelay_provider_latency_seconds_bucket{provider="mailgun",le="+Inf"})") == 1);
  CHECK(sample(m, "mailrelay_in_flight") == 0);
  CHECK(sample(m, "mailrelay_queue_depth") == 0);
  CHECK(sample(m, R"(mailrelay_build_info{version="test"})") == 1);
}

TEST_CASE("/v1/providers: order, state, counters and last error, behind the bearer token", "[http_api][metrics]") {
  ApiHarness h({}, 10485760, true);
  httplib::Headers auth{{"Authorization", "Bearer billing-token-0123456789"}};
  check_error(h.client().Get("/v1/providers"), 401, "unauthorized");
  h.sendgrid_server.push(fakes::reply(400, R"({"errors":[{"message":"Invalid address alice@example.org"}]})"));
  REQUIRE(h.send(fakes::sample_request(), auth)->status == 200);
  auto r = h.client().Get("/v1/providers", auth);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  json b = body_of(r);
  REQUIRE(b["providers"].size() == 2);
  CHECK(b["providers"][0]["name"] == "sendgrid");
  CHECK(b["providers"][0]["enabled"] == true);
  CHECK(b["providers"][0]["circuit"] == "closed");
  CHECK(b["providers"][0]["counters"]["rejected"] == 1);
  CHECK(b["providers"][0]["last_error"]["message"] == "Invalid address <address>");
  CHECK(b["providers"][1]["name"] == "mailgun");
  CHECK(b["providers"][1]["counters"]["sent"] == 1);
  CHECK(b["providers"][1]["last_error"].is_null());
}

TEST_CASE("/v1/limits: the configured providers' limits together, each with its source", "[http_api][limits]") {
  ApiHarness h({}, 10485760, true);
  httplib::Headers auth{{"Authorization", "Bearer billing-token-0123456789"}};
  check_error(h.client().Get("/v1/limits"), 401, "unauthorized");
  auto r = h.client().Get("/v1/limits", auth);
  REQUIRE(r);
  REQUIRE(r->status == 200);
  json b = body_of(r);
  CHECK(b["providers"] == json{"sendgrid", "mailgun"});
  CHECK(b["limits"] == json::parse(R"({"recipients": 1000, "tags": 3, "tag_length": 128, "metadata_bytes": 4000,
                                       "options_bytes": 16000, "attachment_min_bytes": 1, "inline_attachments": null})"));
  for (auto& [name, sources] : b["sources"].items()) {
    CAPTURE(name);
    CHECK_FALSE(sources.empty());
  }
  // A message beyond them: 400 with the field, no provider called.
  json j = fakes::sample_request();
  j["tags"] = {"a", "b", "c", "d"};
  auto refused = h.send(j, auth);
  check_error(refused, 400, "invalid_request");
  CHECK(body_of(refused)["error"]["field"] == "tags");
  CHECK(h.sendgrid_server.count() + h.mailgun_server.count() == 0);
}

TEST_CASE("failover keeps inline images, sandbox and the request id: SendGrid fails, Mailgun gets the same cid", "[http_api]") {
  ApiHarness h;
  h.sendgrid_server.push_n(4, fakes::reply(500, "Internal Server Error", "text/plain"));
  json j = fakes::sample_request();
  j["html"] = "<p><img src=\"cid:logo\"></p>";
  j["attachments"] = {{{"filename", "logo.png"}, {"content_type", "image/png"}, {"content", "iVBORw0K"},
                       {"disposition", "inline"}, {"content_id", "logo"}}};
  j["sandbox"] = true;
  auto r = h.send(j, {{"X-Request-Id", "inline-1"}});
  REQUIRE(r);
  REQUIRE(r->status == 200);
  json b = body_of(r);
  CHECK(b["provider"] == "mailgun");
  CHECK(b["sandbox"] == true);
  // SendGrid was asked with disposition inline and content_id "logo", in sandbox mode.
  auto sg = h.sendgrid_server.received();
  REQUIRE_FALSE(sg.empty());
  json sent = json::parse(sg[0].body);
  CHECK(sent["attachments"][0]["content_id"] == "logo");
  CHECK(sent["attachments"][0]["disposition"] == "inline");
  CHECK(sent["mail_settings"]["sandbox_mode"]["enable"] == true);
  CHECK(sent["custom_args"]["mailrelay_request_id"] == "inline-1");
  // Mailgun got the image as an inline file named by the same content id, and the same html.
  auto mg = h.mailgun_server.received();
  REQUIRE(mg.size() == 1);
  const fakes::FormPart* image = nullptr;
  for (const auto& part : mg[0].form) {
    if (part.name == "inline") image = &part;
  }
  REQUIRE(image);
  CHECK(image->filename == "logo");
  CHECK(image->content_type == "image/png");
  CHECK(image->value == std::string("\x89PNG\r\n", 6));
  CHECK(mg[0].form_values("html") == std::vector<std::string>{"<p><img src=\"cid:logo\"></p>"});
  CHECK(mg[0].form_values("o:testmode") == std::vector<std::string>{"yes"});
  CHECK(mg[0].form_values("v:mailrelay_request_id") == std::vector<std::string>{"inline-1"});
  // The audit line says it was a sandbox send.
  bool found = false;
  for (const auto& line : h.audit_lines()) {
    if (line["event"] == "request" && line["request_id"] == "inline-1") {
      found = true;
      CHECK(line["sandbox"] == true);
    }
  }
  CHECK(found);
}

TEST_CASE("409, 422 and replays: Idempotency-Key end to end", "[http_api][idempotency]") {
  ApiHarness h({}, 10485760, true);
  httplib::Headers billing{{"Authorization", "Bearer billing-token-0123456789"}, {"Idempotency-Key", "order-42"}};
  httplib::Headers shop{{"Authorization", "Bearer shop-token-0123456789ab"}, {"Idempotency-Key", "order-42"}};

  // 409 while the first request with the key is still at the (slow) provider.
  fakes::FakeReply slow;
  slow.delay = milliseconds(800);
  h.sendgrid_server.push(slow);
  std::unique_ptr<httplib::Result> first;
  std::thread t([&] { first = std::make_unique<httplib::Result>(h.send(fakes::sample_request(), billing)); });
  for (int i = 0; i < 200 && h.sendgrid_server.count() == 0; ++i) std::this_thread::sleep_for(milliseconds(5));
  check_error(h.send(fakes::sample_request(), billing), 409, "idempotency_in_flight");
  t.join();
  REQUIRE(first);
  REQUIRE(*first);
  REQUIRE((*first)->status == 200);

  // Replay: same key, same body, same client: the first answer, nothing sent.
  auto again = h.send(fakes::sample_request(), billing);
  REQUIRE(again);
  CHECK(again->status == 200);
  CHECK(again->get_header_value("Idempotent-Replayed") == "true");
  CHECK(again->body == (*first)->body);
  CHECK(h.sendgrid_server.count() == 1);
  CHECK((*first)->get_header_value("Idempotent-Replayed").empty());

  // 422: same key, other body.
  json other = fakes::sample_request();
  other["subject"] = "Another subject";
  check_error(h.send(other, billing), 422, "idempotency_mismatch");

  // Another client's key space is its own.
  auto theirs = h.send(fakes::sample_request(), shop);
  REQUIRE(theirs);
  CHECK(theirs->status == 200);
  CHECK(theirs->get_header_value("Idempotent-Replayed").empty());
  CHECK(h.sendgrid_server.count() == 2);

  auto metrics = h.client().Get("/metrics")->body;
  CHECK(metrics.find("\nmailrelay_idempotency_replays_total 1\n") != std::string::npos);
  // The replay is audited as such, pointing at the first answer.
  bool found = false;
  for (const auto& l : h.audit_lines()) {
    if (l["event"] == "request" && l["outcome"] == "replayed") {
      found = true;
      CHECK(l["replay_of"] == json::parse((*first)->body)["request_id"]);
    }
  }
  CHECK(found);
}

TEST_CASE("Idempotency-Key: a failure that surely sent nothing is not replayed", "[http_api][idempotency]") {
  ApiHarness h;
  httplib::Headers keyed{{"Idempotency-Key", "retry-me"}};
  h.sendgrid_server.push(fakes::reply(400, R"({"errors":[{"message":"bad"}]})"));
  h.mailgun_server.push(fakes::reply(400, R"({"message":"bad"})"));
  check_error(h.send(fakes::sample_request(), keyed), 502, "all_providers_failed");
  auto retry = h.send(fakes::sample_request(), keyed);  // providers recovered: this one sends
  REQUIRE(retry);
  CHECK(retry->status == 200);
  CHECK(retry->get_header_value("Idempotent-Replayed").empty());
  check_error(h.send(fakes::sample_request(), {{"Idempotency-Key", std::string(256, 'k')}}), 400, "invalid_request");
}

TEST_CASE("503 no_provider_available when every provider is parked, and readyz says so", "[http_api][circuit_breaker]") {
  ApiHarness h;
  auto throttled = fakes::reply(429, R"({"message":"too many requests"})");
  throttled.headers = {{"Retry-After", "30"}};
  h.sendgrid_server.push(throttled);
  h.mailgun_server.push(throttled);
  check_error(h.send(fakes::sample_request()), 502, "all_providers_failed");
  auto r = h.send(fakes::sample_request());
  check_error(r, 503, "no_provider_available");
  int retry_after = std::stoi(r->get_header_value("Retry-After"));
  CHECK(retry_after >= 29);
  CHECK(retry_after <= 30);
  json b = body_of(r);
  REQUIRE(b["attempts"].size() == 2);
  CHECK(b["attempts"][0]["outcome"] == "skipped");
  CHECK_THAT(b["attempts"][0]["error"].get<std::string>(), Catch::Contains("429"));
  CHECK(h.sendgrid_server.count() == 1);
  CHECK(h.mailgun_server.count() == 1);
  auto ready = h.client().Get("/readyz");
  CHECK(ready->status == 503);
  CHECK_THAT(body_of(ready)["reason"].get<std::string>(), Catch::Contains("sendgrid: circuit open or parked for "));
  CHECK(body_of(h.client().Get("/v1/providers"))["providers"][0]["circuit"] == "parked");
  std::string metrics = h.client().Get("/metrics")->body;
  CHECK(sample(metrics, R"(mailrelay_provider_circuit{provider="sendgrid",state="parked"})") == 1);
  CHECK(sample(metrics, R"(mailrelay_provider_circuit{provider="sendgrid",state="closed"})") == 0);
}

TEST_CASE("hazards: Range is ignored, REMOTE_ADDR cannot fake the client address, request ids cannot inject headers", "[http_api][hazards]") {
  ApiHarness h;
  auto r = h.send(fakes::sample_request(), {{"Range", "bytes=0-10"}});
  REQUIRE(r);
  CHECK(r->status == 200);  // a naive cpp-httplib 0.11.4 server answers 206 with 11 bytes
  CHECK_NOTHROW(json::parse(r->body));
  auto spoofed = h.send(fakes::sample_request(), {{"REMOTE_ADDR", "203.0.113.9"}, {"X-Request-Id", "a%0D%0AX-Evil:%201"}});
  REQUIRE(spoofed);
  CHECK_FALSE(spoofed->has_header("X-Evil"));
  CHECK(is_acceptable_request_id(spoofed->get_header_value("X-Request-Id")));
  auto lines = h.audit_lines();
  CHECK(lines.back()["client_ip"] == "127.0.0.1");
}

TEST_CASE("audit: an attempt line that cannot be written means no provider call, 503 audit_unavailable", "[http_api][audit][faults]") {
  auto sink = std::make_unique<fakes::MemorySink>();
  auto* memory = sink.get();
  ApiHarness::Extras extras;
  extras.audit_sink = std::move(sink);
  ApiHarness h({}, 10485760, false, std::move(extras));
  memory->fail_all = true;
  auto r = h.send(fakes::sample_request(), {{"Idempotency-Key", "k-audit"}});
  check_error(r, 503, "audit_unavailable");
  CHECK(r->get_header_value("Retry-After") == "1");
  CHECK(h.sendgrid_server.count() == 0);  // nothing sent that is not on record
  CHECK(h.mailgun_server.count() == 0);
  CHECK(h.client().Get("/readyz")->status == 503);
  std::string ops = h.ops();
  CHECK_THAT(ops, Catch::Contains("audit log: write failed") && Catch::Contains("\"event\":\"attempt\"") &&
                      Catch::Contains("\"event\":\"request\""));
  // Writable again: ready again, and the same key may now send (nothing went out before).
  memory->fail_all = false;
  CHECK(h.client().Get("/readyz")->status == 200);
  r = h.send(fakes::sample_request(), {{"Idempotency-Key", "k-audit"}});
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(h.sendgrid_server.count() == 1);
}

TEST_CASE("audit: a request line that cannot be written after a send reaches the operator and is counted", "[http_api][audit][faults]") {
  auto sink = std::make_unique<fakes::MemorySink>();
  auto* memory = sink.get();
  ApiHarness::Extras extras;
  extras.audit_sink = std::move(sink);
  ApiHarness h({}, 10485760, false, std::move(extras));
  memory->fail_requests = true;
  auto r = h.send(fakes::sample_request(), {{"X-Request-Id", "lost-line-1"}});
  REQUIRE(r);
  CHECK(r->status == 200);  // the mail went out: the answer says so
  CHECK(h.sendgrid_server.count() == 1);
  auto lines = memory->snapshot();
  REQUIRE(lines.size() == 1);  // the attempt line, written before the call
  CHECK_THAT(lines[0], Catch::Contains("\"event\":\"attempt\"") && Catch::Contains("lost-line-1"));
  // The request line, whole, in the operational log; counted; readiness off until writes work.
  std::string ops = h.ops();
  auto at = ops.find("the line follows: ");
  REQUIRE(at != std::string::npos);
  std::string line = ops.substr(at + 18, ops.find('\n', at) - at - 18);
  json parsed = json::parse(line);
  CHECK(parsed["event"] == "request");
  CHECK(parsed["request_id"] == "lost-line-1");
  CHECK(parsed["status"] == 200);
  auto metrics = h.client().Get("/metrics");
  CHECK_THAT(metrics->body, Catch::Contains("mailrelay_audit_write_errors_total 1\n"));
  auto ready = h.client().Get("/readyz");
  CHECK(ready->status == 503);
  CHECK(json::parse(ready->body)["status"] == "audit_unavailable");
  memory->fail_requests = false;
  CHECK(h.client().Get("/readyz")->status == 200);
}
