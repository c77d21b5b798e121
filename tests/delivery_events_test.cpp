// Delivery events: signatures as the providers document them (SendGrid's own SDK test vector, keys
// generated here, RFC 4231 for the HMAC), and the providers' sample payloads put into our vocabulary.
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base64.h"
#include "delivery_events.h"
#include "mailgun_provider.h"
#include "postmark_provider.h"
#include "sendgrid_provider.h"
#include "test_keys.h"

using namespace mailrelay;
using nlohmann::json;

// sendgrid-python test/unit/test_eventwebhook.py: SendGrid's own vector (the body ends in CRLF).
constexpr const char* kSdkPublicKey =
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
constexpr const char* kSdkSignature =
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
constexpr const char* kSdkTimestamp = "1600112502";
constexpr const char* kSdkPayload =
    "[{\"email\":\"hello@world.com\",\"event\":\"dropped\",\"reason\":\"Bounced Address\","
    "\"sg_event_id\":\"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA\","
    "\"sg_message_id\":\"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0\","
    "\"smtp-id\":\"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>\",\"timestamp\":1600112492}]\r\n";

TEST_CASE("SendGrid signature: SendGrid's SDK vector verifies, any change does not", "[events][sendgrid]") {
  CHECK(verify_sendgrid_signature(kSdkPublicKey, kSdkSignature, kSdkTimestamp, kSdkPayload));
  CHECK_FALSE(verify_sendgrid_signature(kSdkPublicKey, kSdkSignature, "1600112503", kSdkPayload));
  CHECK_FALSE(verify_sendgrid_signature(kSdkPublicKey, kSdkSignature, kSdkTimestamp, "payload"));
  std::string body = kSdkPayload;
  body.resize(body.size() - 2);  // without the CRLF SendGrid signed
  CHECK_FALSE(verify_sendgrid_signature(kSdkPublicKey, kSdkSignature, kSdkTimestamp, body));
  // The SDK's "bad key" and "bad signature" cases.
  CHECK_FALSE(verify_sendgrid_signature(
      "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==",
      kSdkSignature, kSdkTimestamp, kSdkPayload));
  CHECK_FALSE(verify_sendgrid_signature(
      kSdkPublicKey,
      "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=", kSdkTimestamp,
      kSdkPayload));
  CHECK_FALSE(verify_sendgrid_signature(kSdkPublicKey, "not base64!", kSdkTimestamp, kSdkPayload));
  CHECK_FALSE(verify_sendgrid_signature(kSdkPublicKey, "", kSdkTimestamp, kSdkPayload));
  CHECK_FALSE(verify_sendgrid_signature("", kSdkSignature, kSdkTimestamp, kSdkPayload));
  CHECK_FALSE(check_sendgrid_public_key(kSdkPublicKey).has_value());
}

TEST_CASE("SendGrid signature: a key pair generated here", "[events][sendgrid]") {
  fakes::EcKey key;
  const std::string body = R"([{"event":"delivered","email":"a@example.org"}])";
  const std::string signature = key.sign(std::string("1700000000") + body);
  CHECK(verify_sendgrid_signature(key.public_base64(), signature, "1700000000", body));
  fakes::EcKey other;
  CHECK_FALSE(verify_sendgrid_signature(other.public_base64(), signature, "1700000000", body));
  CHECK_FALSE(verify_sendgrid_signature(key.public_base64(), signature, "1700000000", body + " "));
  // What is not a P-256 public key in base64 DER is refused at start-up.
  CHECK(check_sendgrid_public_key("-----BEGIN PUBLIC KEY-----").has_value());
  CHECK(check_sendgrid_public_key(base64_encode("not DER")).has_value());
  CHECK(check_sendgrid_public_key(fakes::EcKey("P-384").public_base64()).has_value());
}

TEST_CASE("Mailgun signature: hex HMAC-SHA256 over timestamp then token", "[events][mailgun]") {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
  const std::string expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  CHECK(verify_mailgun_signature("Jefe", "what do ya want ", "for nothing?", expected));
  std::string upper = expected;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(verify_mailgun_signature("Jefe", "what do ya want ", "for nothing?", upper));
  CHECK_FALSE(verify_mailgun_signature("Jefe", "what do ya want", " for nothing?x", expected));
  CHECK_FALSE(verify_mailgun_signature("jefe", "what do ya want ", "for nothing?", expected));
  CHECK_FALSE(verify_mailgun_signature("Jefe", "what do ya want ", "for nothing?", expected.substr(0, 63)));
  CHECK_FALSE(verify_mailgun_signature("Jefe", "what do ya want ", "for nothing?", ""));
}

TEST_CASE("Mailgun signature fields are read without building the body", "[events][mailgun][hostile]") {
  auto sig = mailgun_signature(R"({"event-data":{"signature":{"token":"inner"}},"signature":{"timestamp":"1700000000",)"
                               R"("nested":{"token":"deep"},"token":"tok","signature":"abc"}})");
  CHECK(sig.timestamp == "1700000000");
  CHECK(sig.token == "tok");  // neither event-data's nor a nested object's
  CHECK(sig.signature == "abc");
  CHECK(mailgun_signature(R"({"signature":{"timestamp":1700000000,"token":"t","signature":"s"}})").timestamp == "1700000000");
  // Two "signature" members, a broken or a too deep body: nothing.
  CHECK(mailgun_signature(R"({"signature":{"token":"a"},"signature":{"token":"b"}})").token.empty());
  CHECK(mailgun_signature(R"({"signature":{"token":"a"})").token.empty());
  CHECK(mailgun_signature(R"({"signature":{"token":"a"},"x":)" + std::string(100, '[')).token.empty());
  CHECK(mailgun_signature(R"(["signature",{"token":"a"}])").token.empty());
}

TEST_CASE("SendGrid events: the documented types in our vocabulary", "[events][sendgrid]") {
  // Shapes from https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event.
  const json events = json::array({
      {{"email", "a@example.org"}, {"timestamp", 1513299569}, {"event", "processed"}, {"sg_event_id", "e0"}},
      {{"email", "a@example.org"}, {"timestamp", 1513299569}, {"event", "delivered"}, {"sg_event_id", "e1"},
       {"sg_message_id", "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}, {"response", "250 OK"},
       {"mailrelay_request_id", "order-4711"}},
      {{"email", "b@Example.ORG"}, {"timestamp", 1513299569}, {"event", "bounce"}, {"type", "bounce"},
       {"sg_event_id", "e2"}, {"reason", "550 5.1.1 b@example.org: The email account does not exist."}},
      {{"email", "c@example.org"}, {"timestamp", 1513299569}, {"event", "bounce"}, {"type", "blocked"}, {"sg_event_id", "e3"}},
      {{"email", "d@example.org"}, {"timestamp", 1513299569}, {"event", "dropped"}, {"reason", "Bounced Address"}, {"sg_event_id", "e4"}},
      {{"email", "e@example.org"}, {"timestamp", 1513299569}, {"event", "dropped"}, {"reason", "Invalid"}, {"sg_event_id", "e5"}},
      {{"email", "f@example.org"}, {"timestamp", 1513299569}, {"event", "spamreport"}, {"sg_event_id", "e6"}},
      {{"email", "g@example.org"}, {"timestamp", 1513299569}, {"event", "group_unsubscribe"}, {"sg_event_id", "e7"}},
      {{"email", "h@example.org"}, {"timestamp", 1513299569}, {"event", "open"}, {"sg_event_id", "e8"}},
      {{"email", "h@example.org"}, {"timestamp", 1513299569}, {"event", "click"}, {"sg_event_id", "e9"}},
      {{"email", "h@example.org"}, {"timestamp", 1513299569}, {"event", "deferred"}, {"sg_event_id", "e10"},
       {"response", "400 try again later"}},
  });
  auto batch = parse_sendgrid_events(events.dump(), 1513299570);
  REQUIRE(batch);
  CHECK(batch.value().ignored == 1);  // processed
  const auto& e = batch.value().events;
  REQUIRE(e.size() == 10);
  CHECK(e[0].type == "delivered");
  CHECK(e[0].request_id == "order-4711");
  CHECK(e[0].provider_message_id == "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0");
  CHECK(e[0].provider_event_id == "e1");
  CHECK(e[0].occurred_at == "2017-12-15T00:59:29.000Z");
  CHECK(e[0].reason == "250 OK");
  CHECK_FALSE(e[0].suppresses);
  CHECK(e[1].type == "bounced");
  CHECK(e[1].bounce_class == "hard");
  CHECK(e[1].suppresses);
  CHECK(e[2].type == "bounced");
  CHECK(e[2].bounce_class == "soft");
  CHECK_FALSE(e[2].suppresses);
  CHECK(e[3].type == "dropped");
  CHECK(e[3].suppresses);
  CHECK(e[4].type == "dropped");
  CHECK_FALSE(e[4].suppresses);
  CHECK(e[5].type == "complained");
  CHECK(e[5].suppresses);
  CHECK(e[6].type == "unsubscribed");
  CHECK(e[6].suppresses);
  CHECK(e[7].type == "opened");
  CHECK(e[8].type == "clicked");
  CHECK(e[9].type == "deferred");
  CHECK(e[9].reason == "400 try again later");
  // The normalised form holds no address: domain (lower-cased), hash, reason redacted.
  const std::string normalised = e[1].to_json("0123abcd").dump();
  CHECK(normalised.find("b@") == std::string::npos);
  CHECK(e[1].to_json("0123abcd")["recipient_domain"] == "example.org");
  CHECK(e[1].to_json("0123abcd")["recipient_hash"] == "0123abcd");
  CHECK(e[1].to_json("")["recipient_hash"].is_null());
  CHECK(e[1].to_json("")["reason"] == "550 5.1.1 <address>: The email account does not exist.");

  CHECK_FALSE(parse_sendgrid_events("{}", 0));
  CHECK_FALSE(parse_sendgrid_events("[1]", 0));
  CHECK_FALSE(parse_sendgrid_events("not json", 0));
  CHECK(parse_sendgrid_events("[]", 0).value().events.empty());
}

TEST_CASE("Mailgun events: failed, delivered, complained, unsubscribed, and the rest", "[events][mailgun]") {
  // Shape from https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads.
  auto event = [](json data) {
    return json{{"signature", {{"timestamp", "1770920772"}, {"token", "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"},
                               {"signature", "00"}}},
                {"event-data", std::move(data)}};
  };
  json failed{{"event", "failed"},
              {"severity", "permanent"},
              {"reason", "bounce"},
              {"recipient", "alice@example.org"},
              {"timestamp", 1770920771.5},
              {"delivery-status", {{"code", 550}, {"description", "No such mailbox alice@example.org"}, {"message", "5.1.1"}}},
              {"message", {{"headers", {{"message-id", "20260203192638.000be97f99f8cea1@sample.mailgun.com"}}}}},
              {"user-variables", {{"mailrelay_request_id", "order-4711"}}}};
  auto batch = parse_mailgun_event(event(failed));
  REQUIRE(batch);
  REQUIRE(batch.value().events.size() == 1);
  const DeliveryEvent& e = batch.value().events[0];
  CHECK(batch.value().timestamp == 1770920772);
  CHECK(e.provider == "mailgun");
  CHECK(e.type == "bounced");
  CHECK(e.bounce_class == "hard");
  CHECK(e.suppresses);
  CHECK(e.recipient == "alice@example.org");
  CHECK(e.request_id == "order-4711");
  CHECK(e.provider_message_id == "20260203192638.000be97f99f8cea1@sample.mailgun.com");
  CHECK(e.provider_event_id == "e0b5477167110d68991efc6b9f89f0a11066af27834600e123");
  CHECK(e.occurred_at == "2026-02-12T18:26:11.500Z");
  CHECK(e.reason == "No such mailbox alice@example.org");

  failed["severity"] = "temporary";
  auto temporary = parse_mailgun_event(event(failed));
  CHECK(temporary.value().events.at(0).type == "deferred");
  CHECK_FALSE(temporary.value().events.at(0).suppresses);
  for (const auto& [kind, type, suppresses] : {std::tuple<const char*, const char*, bool>{"delivered", "delivered", false},
                                               {"complained", "complained", true},
                                               {"unsubscribed", "unsubscribed", true},
                                               {"opened", "opened", false},
                                               {"clicked", "clicked", false},
                                               {"rejected", "dropped", false}}) {
    auto one = parse_mailgun_event(event({{"event", kind}, {"recipient", "bob@example.org"}}));
    REQUIRE(one.value().events.size() == 1);
    CHECK(one.value().events[0].type == type);
    CHECK(one.value().events[0].suppresses == suppresses);
    CHECK(one.value().events[0].request_id.empty());  // no stamp: the line says null
  }
  auto accepted = parse_mailgun_event(event({{"event", "accepted"}}));
  CHECK(accepted.value().events.empty());
  CHECK(accepted.value().ignored == 1);
  CHECK_FALSE(parse_mailgun_event(json{{"signature", json::object()}}));
  CHECK_FALSE(parse_mailgun_event(json::array()));
}

TEST_CASE("UTC from unix seconds", "[events]") {
  CHECK(utc_from_unix(0) == "");
  CHECK(utc_from_unix(-5) == "");
  CHECK(utc_from_unix(1e15) == "");
  CHECK(utc_from_unix(17000100000.0) == "");  // int64 nanoseconds would overflow
  CHECK(utc_from_unix(1600112492) == "2020-09-14T19:41:32.000Z");
  CHECK(utc_from_unix(1600112492.25) == "2020-09-14T19:41:32.250Z");
}
