// Every operation of docs/openapi.yaml, once or more, against a real daemon: the answers are
// recorded (daemon.h) and validated against the document by tools/check_answers.py afterwards
// (ctest openapi_answers), so every endpoint, status and error body of the contract is exercised.
#include <catch2/catch.hpp>

#include <chrono>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "daemon.h"
#include "hash.h"
#include "test_helpers.h"

using nlohmann::json;

TEST_CASE("API tour: every documented operation answers as documented", "[e2e][openapi]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("tokens"), "billing:billing-token-0123456789\nops:ops-token-0123456789abcd:admin\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox"), "--tokens-file",
            dir.file("tokens"), "--max-body-bytes", "100000", "--max-body-bytes-in-flight", "1000000"},
           {"MAILGUN_WEBHOOK_SIGNING_KEY=fake-mailgun-signing-key",
            "POSTMARK_WEBHOOK_CREDENTIALS=postmark:fake-webhook-password"});
  REQUIRE(d.port() > 0);
  const httplib::Headers billing{{"Authorization", "Bearer billing-token-0123456789"}};
  const httplib::Headers ops{{"Authorization", "Bearer ops-token-0123456789abcd"}};
  auto status = [](const httplib::Result& r) { return r ? r->status : -1; };
  auto c = d.client();
  const std::string message = fakes::sample_request().dump();

  auto document = c.Get("/v1/openapi.json");
  REQUIRE(status(document) == 200);
  CHECK(json::parse(document->body)["paths"].contains("/v1/send"));
  CHECK(status(c.Get("/healthz")) == 200);
  CHECK(status(c.Get("/readyz")) == 200);
  CHECK(status(c.Get("/metrics")) == 200);
  CHECK(status(c.Get("/v1/limits", billing)) == 200);
  CHECK(status(c.Get("/v1/limits")) == 401);
  CHECK(status(c.Get("/v1/providers", ops)) == 200);

  // Control: switch the only provider off and on, set and reset the order.
  CHECK(status(c.Patch("/v1/providers/outbox", ops, R"({"enabled": false, "reason": "tour"})", "application/json")) == 200);
  CHECK(status(c.Post("/v1/send", billing, message, "application/json")) == 503);
  CHECK(status(c.Patch("/v1/providers/outbox", billing, R"({"enabled": true})", "application/json")) == 403);
  CHECK(status(c.Patch("/v1/providers/nope", ops, R"({"enabled": true})", "application/json")) == 404);
  CHECK(status(c.Patch("/v1/providers/outbox", ops, R"({"enabled": "yes"})", "application/json")) == 400);
  CHECK(status(c.Patch("/v1/providers/outbox", ops, "enabled=true", "text/plain")) == 415);
  CHECK(status(c.Patch("/v1/providers/outbox", ops, R"({"enabled": true})", "application/json")) == 200);
  CHECK(status(c.Put("/v1/providers/order", ops, R"({"order": ["outbox"]})", "application/json")) == 200);
  CHECK(status(c.Delete("/v1/providers/order", ops)) == 200);

  // Sends and their refusals.
  CHECK(status(c.Post("/v1/send", billing, message, "application/json")) == 200);
  httplib::Headers keyed = billing;
  keyed.emplace("Idempotency-Key", "tour-1");
  CHECK(status(c.Post("/v1/send", keyed, message, "application/json")) == 200);
  auto replay = c.Post("/v1/send", keyed, message, "application/json");
  CHECK(status(replay) == 200);
  CHECK(replay->get_header_value("Idempotent-Replayed") == "true");
  CHECK(status(c.Post("/v1/send", keyed, fakes::full_request().dump(), "application/json")) == 422);
  CHECK(status(c.Post("/v1/send", billing, R"({"from": "a@example.com"})", "application/json")) == 400);
  CHECK(status(c.Post("/v1/send", billing, message, "text/plain")) == 415);
  CHECK(status(c.Post("/v1/send", billing, std::string(200000, ' '), "application/json")) == 413);
  CHECK(status(c.Post("/v1/send", ops, message, "application/json")) == 403);  // admin only, no send scope
  CHECK(status(c.Post("/v1/send", message, "application/json")) == 401);
  CHECK(status(c.Get("/v1/send")) == 405);
  // Batches and message status.
  httplib::Headers tour_batch = billing;
  tour_batch.emplace("X-Request-Id", "tour-batch");
  const json batch{{"messages", {fakes::sample_request(), {{"from", "a@example.com"}}}}};
  CHECK(status(c.Post("/v1/send/batch", tour_batch, batch.dump(), "application/json")) == 207);
  CHECK(status(c.Post("/v1/send/batch", billing, json{{"messages", {fakes::sample_request()}}}.dump(), "application/json")) == 200);
  CHECK(status(c.Post("/v1/send/batch", billing, R"({"messages": []})", "application/json")) == 400);
  CHECK(status(c.Post("/v1/send/batch", batch.dump(), "application/json")) == 401);
  CHECK(status(c.Get("/v1/messages/tour-batch.0", billing)) == 200);
  CHECK(status(c.Get("/v1/messages/tour-batch.1", billing)) == 404);
  CHECK(status(c.Get("/v1/messages/tour-batch.0")) == 401);
  CHECK(status(c.Get("/no/such/path")) == 404);

  // Suppressions.
  CHECK(status(c.Put("/v1/suppressions/bob@example.org", ops, R"({"reason": "tour"})", "application/json")) == 200);
  CHECK(status(c.Get("/v1/suppressions/bob@example.org", ops)) == 200);
  CHECK(status(c.Post("/v1/send", billing, message, "application/json")) == 422);
  CHECK(status(c.Delete("/v1/suppressions/bob@example.org", ops)) == 200);
  CHECK(status(c.Get("/v1/suppressions/bob@example.org", ops)) == 404);
  CHECK(status(c.Delete("/v1/suppressions/bob@example.org", ops)) == 404);
  CHECK(status(c.Get("/v1/suppressions/not-an-address", ops)) == 400);
  CHECK(status(c.Get("/v1/suppressions/bob@example.org", billing)) == 403);

  // Webhooks: Mailgun signed, Postmark with basic auth, SendGrid not configured.
  const std::string t = std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const json mailgun{{"signature", {{"timestamp", t}, {"token", "tour-token"},
                                    {"signature", mailrelay::hmac_sha256_hex("fake-mailgun-signing-key", t + "tour-token")}}},
                     {"event-data", {{"event", "opened"}, {"recipient", "alice@example.org"}}}};
  CHECK(status(c.Post("/v1/events/mailgun", mailgun.dump(), "application/json")) == 200);
  json forged = mailgun;
  forged["signature"]["token"] = "other-token";
  CHECK(status(c.Post("/v1/events/mailgun", forged.dump(), "application/json")) == 401);
  CHECK(status(c.Post("/v1/events/mailgun", "[1, 2", "application/json")) == 401);
  CHECK(status(c.Post("/v1/events/sendgrid", "[]", "application/json")) == 404);
  const std::string record = R"({"RecordType": "Open", "MessageID": "m-1", "Recipient": "alice@example.org", "ReceivedAt": "2026-12-03T06:00:00Z"})";
  CHECK(status(c.Post("/v1/events/postmark", record, "application/json")) == 401);
  auto postmark = d.client();
  postmark.set_basic_auth("postmark", "fake-webhook-password");
  CHECK(status(postmark.Post("/v1/events/postmark", record, "application/json")) == 200);
  CHECK(status(postmark.Post("/v1/events/postmark", "not json", "application/json")) == 400);
}
