// End-to-end: the real mailrelayd binary, started with the documented flags, driven over real sockets,
// against fake SendGrid and Mailgun servers on loopback.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <mutex>
#include <thread>

#include <httplib.h>

#include "daemon.h"
#include "fake_provider_server.h"
#include "test_helpers.h"

using nlohmann::json;


TEST_CASE("outbox: the README quick start yields an .eml a mail parser accepts and SIGTERM exits 0", "[e2e]") {
  fakes::TempDir dir;
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox")});
  REQUIRE(d.port() > 0);
  auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  json b = json::parse(r->body);
  CHECK(b["provider"] == "outbox");
  auto files = files_in(dir.file("outbox"));
  REQUIRE(files.size() == 1);
  std::string cmd = "python3 -c \"import email,sys; from email import policy; "
                    "m=email.message_from_binary_file(open(sys.argv[1],'rb'),policy=policy.default); "
                    "assert not m.defects; assert m['Subject']=='Your invoice'; "
                    "assert m.get_body(('plain',)).get_content().strip()=='plain body'\" " + files[0];
  CHECK(std::system(cmd.c_str()) == 0);
  CHECK(d.stop() == 0);
  CHECK_THAT(d.err(), Catch::Contains("stopped"));
}

TEST_CASE("SendGrid fails, Mailgun answers: the binary fails over with keys from files", "[e2e]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, mailgun;
  fakes::write_file(dir.file("sg.key"), std::string(fakes::kSendGridKey) + "\n");
  fakes::write_file(dir.file("mg.key"), fakes::kMailgunKey);
  auto unavailable = fakes::reply(503, R"({"errors":[{"message":"Service Unavailable"}]})");
  sendgrid.push_n(2, unavailable);
  Daemon d({"--listen", "127.0.0.1:0", "--sendgrid-base-url", sendgrid.base_url(), "--sendgrid-api-key-file",
            dir.file("sg.key"), "--mailgun-base-url", mailgun.base_url(), "--mailgun-domain", fakes::kMailgunDomain,
            "--mailgun-api-key-file", dir.file("mg.key")});
  REQUIRE(d.port() > 0);
  auto r = d.client().Post("/v1/send", {{"X-Request-Id", "e2e-failover"}}, fakes::sample_request().dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  json b = json::parse(r->body);
  CHECK(b["request_id"] == "e2e-failover");
  CHECK(b["provider"] == "mailgun");
  CHECK(b["attempts"].size() == 3);
  CHECK(sendgrid.count() == 2);
  CHECK(mailgun.count() == 1);
  CHECK(d.stop() == 0);
  // Keys never reach the operational log.
  CHECK_THAT(d.err(), !Catch::Contains(fakes::kSendGridKey) && !Catch::Contains(fakes::kMailgunKey));
}

TEST_CASE("GET /v1/limits follows --providers, and a SendGrid 429 with X-RateLimit-Reset parks it", "[e2e][limits]") {
  fakes::TempDir dir;
  {
    Daemon outbox({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox")});
    REQUIRE(outbox.port() > 0);
    auto r = outbox.client().Get("/v1/limits");
    REQUIRE(r);
    CHECK(r->status == 200);
    json limits = json::parse(r->body)["limits"];
    CHECK(limits["recipients"] == 1000);
    CHECK(limits["tags"].is_null());
    CHECK(outbox.stop() == 0);
  }
  fakes::FakeProviderServer sendgrid, mailgun;
  fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
  fakes::write_file(dir.file("mg.key"), fakes::kMailgunKey);
  // The rate-limits page's 429: no Retry-After, the reset as Unix seconds, a minute from now.
  fakes::FakeReply throttled = fakes::reply(429, R"({"errors":[{"field":null,"message":"too many requests"}]})");
  throttled.headers = {{"X-RateLimit-Limit", "150"}, {"X-RateLimit-Remaining", "0"},
                       {"X-RateLimit-Reset", std::to_string(std::time(nullptr) + 60)}};
  sendgrid.push(throttled);
  Daemon d({"--listen", "127.0.0.1:0", "--sendgrid-base-url", sendgrid.base_url(), "--sendgrid-api-key-file",
            dir.file("sg.key"), "--mailgun-base-url", mailgun.base_url(), "--mailgun-domain", fakes::kMailgunDomain,
            "--mailgun-api-key-file", dir.file("mg.key")});
  REQUIRE(d.port() > 0);
  auto r = d.client().Get("/v1/limits");
  REQUIRE(r);
  json limits = json::parse(r->body)["limits"];
  CHECK(limits["tags"] == 3);
  CHECK(limits["metadata_bytes"] == 4000);
  CHECK(limits["options_bytes"] == 16000);
  json four_tags = fakes::sample_request();
  four_tags["tags"] = {"a", "b", "c", "d"};
  auto refused = d.client().Post("/v1/send", four_tags.dump(), "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 400);
  CHECK(json::parse(refused->body)["error"]["field"] == "tags");
  // Two sends: the first meets the 429 and fails over; the second skips the parked SendGrid.
  for (int i = 0; i < 2; ++i) {
    auto sent = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(sent);
    CHECK(sent->status == 200);
    CHECK(json::parse(sent->body)["provider"] == "mailgun");
  }
  CHECK(sendgrid.count() == 1);
  CHECK(mailgun.count() == 2);
  auto providers = d.client().Get("/v1/providers");
  REQUIRE(providers);
  CHECK(json::parse(providers->body)["providers"][0]["circuit"] == "parked");
  CHECK(d.stop() == 0);
}

TEST_CASE("postmark and sendgrid fail over to each other, in either order", "[e2e][postmark]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, postmark;
  fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
  fakes::write_file(dir.file("pm.key"), fakes::kPostmarkToken);
  auto flags = [&](const std::string& order) {
    return std::vector<std::string>{"--listen", "127.0.0.1:0", "--providers", order,
                                    "--sendgrid-base-url", sendgrid.base_url(), "--sendgrid-api-key-file", dir.file("sg.key"),
                                    "--postmark-base-url", postmark.base_url(), "--postmark-api-key-file", dir.file("pm.key")};
  };
  SECTION("postmark first: its 500s, then SendGrid") {
    postmark.push_n(2, fakes::reply(500, R"({"ErrorCode":0,"Message":"Internal Server Error"})"));
    Daemon d(flags("postmark,sendgrid"));
    REQUIRE(d.port() > 0);
    auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    json b = json::parse(r->body);
    CHECK(b["provider"] == "sendgrid");
    CHECK(b["attempts"][0]["provider"] == "postmark");
    CHECK(postmark.count() == 2);
    // Postmark's limits narrow the fleet's (README "Providers").
    json limits = json::parse(d.client().Get("/v1/limits")->body)["limits"];
    CHECK(limits["recipients"] == 50);
    CHECK(limits["tags"] == 1);
    CHECK(d.stop() == 0);
  }
  SECTION("sendgrid first: its 503s, then Postmark with the request id in Metadata") {
    sendgrid.push_n(2, fakes::reply(503, R"({"errors":[{"message":"Service Unavailable"}]})"));
    Daemon d(flags("sendgrid,postmark"));
    REQUIRE(d.port() > 0);
    auto r = d.client().Post("/v1/send", {{"X-Request-Id", "e2e-pm-1"}}, fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    json b = json::parse(r->body);
    CHECK(b["provider"] == "postmark");
    CHECK_THAT(b["provider_message_id"].get<std::string>(), Catch::StartsWith("fake-pm-"));
    auto got = postmark.received();
    REQUIRE(got.size() == 1);
    CHECK(got[0].header("X-Postmark-Server-Token") == fakes::kPostmarkToken);
    CHECK(json::parse(got[0].body)["Metadata"]["mailrelay_request_id"] == "e2e-pm-1");
    CHECK(d.stop() == 0);
    CHECK_THAT(d.err(), !Catch::Contains(fakes::kPostmarkToken));
  }
}

TEST_CASE("elasticemail first with sendgrid as fallback, and three providers deep", "[e2e][elasticemail]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer elastic, sendgrid, postmark;
  fakes::write_file(dir.file("ee.key"), fakes::kElasticEmailKey);
  fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
  fakes::write_file(dir.file("pm.key"), fakes::kPostmarkToken);
  std::vector<std::string> flags{"--listen", "127.0.0.1:0", "--providers", "elasticemail,sendgrid,postmark",
                                 "--elasticemail-base-url", elastic.base_url(), "--elasticemail-api-key-file", dir.file("ee.key"),
                                 "--sendgrid-base-url", sendgrid.base_url(), "--sendgrid-api-key-file", dir.file("sg.key"),
                                 "--postmark-base-url", postmark.base_url(), "--postmark-api-key-file", dir.file("pm.key"),
                                 "--max-retries", "0"};
  Daemon d(flags);
  REQUIRE(d.port() > 0);
  auto send = [&](const std::string& id) {
    auto r = d.client().Post("/v1/send", {{"X-Request-Id", id}}, fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    return json::parse(r->body);
  };
  // Elastic Email takes it, with the request id as its Postback.
  json first = send("e2e-ee-1");
  CHECK(first["provider"] == "elasticemail");
  CHECK_THAT(first["provider_message_id"].get<std::string>(), Catch::StartsWith("fake-ee-"));
  CHECK(json::parse(elastic.received().at(0).body)["Content"]["Postback"] == "e2e-ee-1");
  // Elastic Email fails: SendGrid takes it.
  elastic.push(fakes::reply(500, R"({"Error":"Internal error"})"));
  CHECK(send("e2e-ee-2")["provider"] == "sendgrid");
  // Both fail: Postmark, three deep.
  elastic.push(fakes::reply(500, R"({"Error":"Internal error"})"));
  sendgrid.push(fakes::reply(500, R"({"errors":[{"message":"Internal error"}]})"));
  json third = send("e2e-ee-3");
  CHECK(third["provider"] == "postmark");
  CHECK(third["attempts"].size() == 3);
  // A sandbox message: Elastic Email has no test mode and is skipped with that reason.
  json sandbox = fakes::sample_request();
  sandbox["sandbox"] = true;
  auto r = d.client().Post("/v1/send", sandbox.dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  json b = json::parse(r->body);
  CHECK(b["attempts"][0]["outcome"] == "skipped");
  CHECK(b["attempts"][0]["error"] == "no test mode for a sandbox message");
  CHECK(b["provider"] == "sendgrid");
  CHECK(b["sandbox"] == true);
  CHECK(elastic.count() == 3);
  CHECK(d.stop() == 0);
  CHECK_THAT(d.err(), !Catch::Contains(fakes::kElasticEmailKey));
}

TEST_CASE("Elastic Email: a 429 without Retry-After parks it, an expired key is an error", "[e2e][elasticemail]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer elastic, sendgrid;
  fakes::write_file(dir.file("ee.key"), fakes::kElasticEmailKey);
  fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "elasticemail,sendgrid", "--elasticemail-base-url", elastic.base_url(),
            "--elasticemail-api-key-file", dir.file("ee.key"), "--sendgrid-base-url", sendgrid.base_url(),
            "--sendgrid-api-key-file", dir.file("sg.key"), "--max-retries", "0"});
  REQUIRE(d.port() > 0);
  auto send = [&] {
    auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    return json::parse(r->body);
  };
  elastic.push(fakes::reply(400, R"({"Error":"APIKey Expired"})"));
  json b = send();
  CHECK(b["provider"] == "sendgrid");
  CHECK(b["attempts"][0]["outcome"] == "error");
  CHECK(b["attempts"][0]["error"] == "APIKey Expired");
  elastic.push(fakes::reply(429, R"({"Error":"Too many requests"})"));
  b = send();
  CHECK(b["provider"] == "sendgrid");
  CHECK(b["attempts"][0]["outcome"] == "error");
  CHECK(d.stop() == 0);
  // The park is logged when it is decided (its length is the fact; a clock check would race).
  CHECK_THAT(d.err(), Catch::Contains("throttled: parked for 1000 ms"));
}

TEST_CASE("adaptive strategy: a slow provider loses first place, its figures in GET /v1/providers", "[e2e][adaptive]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer sendgrid, mailgun;
  fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
  fakes::write_file(dir.file("mg.key"), fakes::kMailgunKey);
  fakes::FakeReply slow;
  slow.delay = std::chrono::milliseconds(300);
  sendgrid.push(slow);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid,mailgun", "--strategy", "adaptive",
            "--sendgrid-base-url", sendgrid.base_url(), "--sendgrid-api-key-file", dir.file("sg.key"),
            "--mailgun-base-url", mailgun.base_url(), "--mailgun-domain", fakes::kMailgunDomain,
            "--mailgun-api-key-file", dir.file("mg.key")});
  REQUIRE(d.port() > 0);
  auto provider_of = [&] {
    auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    json b = json::parse(r->body);
    CHECK(b["attempts"].size() == 1);  // first choice, no failover
    return b["provider"].get<std::string>();
  };
  CHECK(provider_of() == "sendgrid");  // no figures yet: the configured order
  for (int i = 0; i < 5; ++i) CHECK(provider_of() == "mailgun");  // 300 ms against a few
  json view = json::parse(d.client().Get("/v1/providers")->body);
  CHECK(view["providers"][0]["name"] == "sendgrid");
  CHECK(view["providers"][0]["latency_ms"].get<double>() > 100);  // 300 ms, fading with a 10 s half-life
  CHECK(view["providers"][0]["calls"] == 1);
  CHECK(view["providers"][0]["error_rate"] == 0.0);
  CHECK(view["providers"][1]["calls"] == 5);
  CHECK(view["providers"][1]["latency_ms"].get<double>() < view["providers"][0]["latency_ms"].get<double>());
  CHECK(d.stop() == 0);
}

TEST_CASE("sendgrid first with elasticemail as fallback", "[e2e][elasticemail]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer elastic, sendgrid;
  fakes::write_file(dir.file("ee.key"), fakes::kElasticEmailKey);
  fakes::write_file(dir.file("sg.key"), fakes::kSendGridKey);
  sendgrid.push_n(2, fakes::reply(503, R"({"errors":[{"message":"Service Unavailable"}]})"));
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid,elasticemail", "--elasticemail-base-url", elastic.base_url(),
            "--elasticemail-api-key-file", dir.file("ee.key"), "--sendgrid-base-url", sendgrid.base_url(),
            "--sendgrid-api-key-file", dir.file("sg.key")});
  REQUIRE(d.port() > 0);
  auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["provider"] == "elasticemail");
  CHECK(sendgrid.count() == 2);
  CHECK(elastic.count() == 1);
  CHECK(d.stop() == 0);
}

TEST_CASE("ses and mailgun fail over to each other, the SES fake checks every signature", "[e2e][ses]") {
  fakes::TempDir dir;
  fakes::FakeProviderServer ses, mailgun;
  fakes::write_file(dir.file("id"), fakes::kSesAccessKeyId);
  fakes::write_file(dir.file("secret"), fakes::kSesSecretKey);
  fakes::write_file(dir.file("mg.key"), fakes::kMailgunKey);
  auto flags = [&](const std::string& order) {
    return std::vector<std::string>{"--listen", "127.0.0.1:0", "--providers", order, "--max-retries", "0",
                                    "--ses-region", fakes::kSesRegion, "--ses-base-url", ses.base_url(),
                                    "--ses-access-key-id-file", dir.file("id"), "--ses-secret-access-key-file", dir.file("secret"),
                                    "--mailgun-base-url", mailgun.base_url(), "--mailgun-domain", fakes::kMailgunDomain,
                                    "--mailgun-api-key-file", dir.file("mg.key")};
  };
  SECTION("ses first: signed and accepted; after a throttle, Mailgun") {
    Daemon d(flags("ses,mailgun"));
    REQUIRE(d.port() > 0);
    auto r = d.client().Post("/v1/send", {{"X-Request-Id", "e2e-ses-1"}}, fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    json b = json::parse(r->body);
    CHECK(b["provider"] == "ses");  // the fake verified the signature over what curl sent
    CHECK_THAT(b["provider_message_id"].get<std::string>(), Catch::StartsWith("fake-ses-"));
    CHECK(json::parse(ses.received().at(0).body)["EmailTags"][0]["Value"] == "e2e-ses-1");
    auto throttled = fakes::reply(429, R"({"message":"Maximum sending rate exceeded."})");
    throttled.headers = {{"x-amzn-ErrorType", "TooManyRequestsException:"}};
    ses.push(throttled);
    r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    b = json::parse(r->body);
    CHECK(b["provider"] == "mailgun");
    CHECK(b["attempts"][0]["error"] == "TooManyRequestsException: Maximum sending rate exceeded.");
    CHECK(json::parse(d.client().Get("/v1/limits")->body)["limits"]["recipients"] == 50);
    // AWS's common ThrottlingException is a 400: a throttle all the same, SES is parked.
    auto quota = fakes::reply(400, R"({"message":"Daily message quota exceeded."})");
    quota.headers = {{"x-amzn-ErrorType", "ThrottlingException:"}};
    ses.push(quota);
    r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(json::parse(r->body)["provider"] == "mailgun");
    auto providers = json::parse(d.client().Get("/v1/providers")->body);
    CHECK(providers["providers"][0]["circuit"] == "parked");  // for 5 minutes: no race
    CHECK(d.stop() == 0);
    CHECK_THAT(d.err(), !Catch::Contains(fakes::kSesSecretKey));
  }
  SECTION("mailgun first: its 500, then SES") {
    mailgun.push(fakes::reply(500, R"({"message":"Internal Server Error"})"));
    Daemon d(flags("mailgun,ses"));
    REQUIRE(d.port() > 0);
    auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(json::parse(r->body)["provider"] == "ses");
    CHECK(d.stop() == 0);
  }
  SECTION("a wrong secret is a signature the fake refuses: error, counted toward the circuit") {
    fakes::write_file(dir.file("secret"), "not-the-secret");
    Daemon d(flags("ses,mailgun"));
    REQUIRE(d.port() > 0);
    auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
    REQUIRE(r);
    json b = json::parse(r->body);
    CHECK(b["attempts"][0]["http_status"] == 403);
    CHECK(b["attempts"][0]["outcome"] == "error");
    CHECK(b["provider"] == "mailgun");
    CHECK(d.stop() == 0);
  }
}

TEST_CASE("TLS to the provider, verified with --ca-file, keys from the environment", "[e2e][tls]") {
  fakes::TempDir dir;
  auto certs = fakes::make_test_certificates(dir);
  fakes::FakeProviderServer sendgrid(certs.cert, certs.key);
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "sendgrid", "--sendgrid-base-url", sendgrid.base_url(),
            "--ca-file", certs.ca},
           {std::string("SENDGRID_API_KEY=") + fakes::kSendGridKey});
  REQUIRE(d.port() > 0);
  auto r = d.client().Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["provider"] == "sendgrid");
  CHECK(d.stop() == 0);
}

TEST_CASE("start-up refusals exit 2 with a clear message", "[e2e]") {
  SECTION("missing credentials") {
    Daemon d({"--listen", "127.0.0.1:0"});
    CHECK(d.wait_exit(5000) == 2);
    CHECK_THAT(d.err(), Catch::Contains("provider 'sendgrid' is listed in --providers but has no API key"));
  }
  SECTION("protected mode") {
    fakes::TempDir dir;
    Daemon d({"--listen", "0.0.0.0:0", "--providers", "outbox", "--outbox-dir", dir.path()});
    CHECK(d.wait_exit(5000) == 2);
    CHECK_THAT(d.err(), Catch::Contains("protected mode"));
  }
  SECTION("unknown option") {
    Daemon d({"--bogus"});
    CHECK(d.wait_exit(5000) == 2);
  }
}

TEST_CASE("bearer tokens from --tokens-file", "[e2e]") {
  fakes::TempDir dir;
  fakes::write_file(dir.file("tokens"), "billing:billing-token-0123456789\n");
  Daemon d({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("out"), "--tokens-file",
            dir.file("tokens")});
  REQUIRE(d.port() > 0);
  auto c = d.client();
  auto denied = c.Post("/v1/send", fakes::sample_request().dump(), "application/json");
  REQUIRE(denied);
  CHECK(denied->status == 401);
  auto ok = c.Post("/v1/send", {{"Authorization", "Bearer billing-token-0123456789"}}, fakes::sample_request().dump(),
                   "application/json");
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(d.stop() == 0);
}

TEST_CASE("listens on IPv6 loopback", "[e2e]") {
  int probe = socket(AF_INET6, SOCK_STREAM, 0);
  if (probe < 0) {
    WARN("no IPv6 on this machine: skipped");
    return;
  }
  close(probe);
  fakes::TempDir dir;
  Daemon d({"--listen", "[::1]:0", "--providers", "outbox", "--outbox-dir", dir.path()});
  if (d.port() == 0) {
    WARN("could not bind [::1]: " + d.err());
    return;
  }
  httplib::Client c("::1", d.port());
  auto r = c.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(d.stop() == 0);
}

TEST_CASE("a second daemon on an address already served refuses to start (exit 1, the address named)", "[e2e]") {
  fakes::TempDir dir;
  Daemon first({"--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", dir.file("outbox")});
  REQUIRE(first.port() > 0);
  const std::string address = "127.0.0.1:" + std::to_string(first.port());
  Daemon second({"--listen", address, "--providers", "outbox", "--outbox-dir", dir.file("outbox2")});
  CHECK(second.wait_exit(10000) == 1);
  CHECK_THAT(second.err(), Catch::Contains("cannot listen on " + address));
  CHECK(first.client().Get("/healthz")->status == 200);
  CHECK(first.stop() == 0);
}
