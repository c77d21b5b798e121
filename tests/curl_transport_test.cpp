#include <catch2/catch.hpp>

#include <set>
#include <thread>

#include <curl/curl.h>

#include <cstdlib>

#include "curl_transport.h"
#include "fake_provider_server.h"
#include "raw_server.h"
#include "sendgrid_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using std::chrono::milliseconds;

namespace {

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  ~CurlGlobal() { curl_global_cleanup(); }
};

HttpRequest json_post(const std::string& base) {
  HttpRequest r;
  r.url = base + "/v3/mail/send";
  r.headers = {{"Authorization", std::string("Bearer ") + fakes::kSendGridKey}};
  r.content_type = "application/json";
  r.body = R"({"personalizations":[{"to":[{"email":"a@example.org"}]}],"from":{"email":"b@example.com"},"subject":"s","content":[{"type":"text/plain","value":"v"}]})";
  return r;
}

}  // namespace

TEST_CASE("transport returns any HTTP answer as-is, status, headers and body", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransport transport({});
  auto [status, body, header] = GENERATE(table<int, std::string, std::string>({
      {500, R"({"errors":[{"message":"boom"}]})", ""},
      {503, "Service Unavailable", ""},
      {429, R"({"errors":[{"message":"slow down"}]})", "3"},
      {401, "Forbidden", ""},
      {400, R"({"errors":[{"message":"bad"}]})", ""}}));
  fakes::FakeReply reply;
  reply.status = status;
  reply.body = body;
  if (!header.empty()) reply.headers = {{"Retry-After", header}};
  server.push(reply);
  auto r = transport.post(json_post(server.base_url()), milliseconds(2000));
  REQUIRE(r);
  CHECK(r.value().status == status);
  CHECK(r.value().body == body);
  CHECK(r.value().header("retry-after") == header);
}

TEST_CASE("transport: success answer and connection reuse across requests", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransport transport({});
  for (int i = 0; i < 3; ++i) {
    auto r = transport.post(json_post(server.base_url()), milliseconds(2000));
    REQUIRE(r);
    CHECK(r.value().status == 202);
    CHECK_THAT(r.value().header("X-Message-Id"), Catch::StartsWith("fake-sg-"));
  }
  auto got = server.received();
  REQUIRE(got.size() == 3);
  CHECK(got[0].remote_port == got[1].remote_port);  // same TCP connection
  CHECK(got[1].remote_port == got[2].remote_port);
  CHECK(got[0].header("Expect").empty());
  CHECK(got[0].header("Content-Type") == "application/json");
}

TEST_CASE("after a burst at most max_idle_handles handles (and their connections) are kept", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransportOptions options;
  options.max_idle_handles = 2;
  CurlTransport transport(options);
  fakes::FakeReply slow;
  slow.delay = milliseconds(300);  // six calls at once: six handles, six connections
  auto burst = [&] {
    server.push_n(6, slow);
    std::vector<std::thread> calls;
    for (int i = 0; i < 6; ++i) {
      calls.emplace_back([&] { CHECK(transport.post(json_post(server.base_url()), milliseconds(5000))); });
    }
    for (auto& t : calls) t.join();
  };
  burst();
  std::set<int> first;
  for (const auto& r : server.received()) first.insert(r.remote_port);
  REQUIRE(first.size() == 6);
  burst();
  auto got = server.received();
  int reused = 0;
  for (std::size_t i = 6; i < got.size(); ++i) reused += first.count(got[i].remote_port) ? 1 : 0;
  CHECK(reused == 2);  // the two kept handles reused their connections; four were closed
}

TEST_CASE("transport faults are classified, with may_have_been_sent", "[curl_transport]") {
  CurlGlobal g;
  CurlTransport transport({});
  auto [mode, kind, sent] = GENERATE(table<fakes::RawServer::Mode, TransportFailure, bool>({
      {fakes::RawServer::Mode::kHang, TransportFailure::kTimeout, true},
      {fakes::RawServer::Mode::kReset, TransportFailure::kConnectionLost, true},
      {fakes::RawServer::Mode::kCloseWithoutAnswer, TransportFailure::kConnectionLost, true},
      {fakes::RawServer::Mode::kGarbage, TransportFailure::kProtocol, true}}));
  fakes::RawServer server(mode);
  auto begin = std::chrono::steady_clock::now();
  auto r = transport.post(json_post(server.base_url()), milliseconds(300));
  auto took = std::chrono::steady_clock::now() - begin;
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == kind);
  CHECK(r.error().may_have_been_sent == sent);
  CHECK(server.requests() == 1);  // the whole request did reach the server
  CHECK(took < std::chrono::seconds(5));
}

TEST_CASE("connection refused: surely not sent", "[curl_transport]") {
  CurlGlobal g;
  CurlTransport transport({});
  int port;
  {
    fakes::RawServer closed(fakes::RawServer::Mode::kReset);
    port = std::stoi(closed.base_url().substr(closed.base_url().rfind(':') + 1));
  }
  auto r = transport.post(json_post("http://127.0.0.1:" + std::to_string(port)), milliseconds(1000));
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == TransportFailure::kConnect);
  CHECK_FALSE(r.error().may_have_been_sent);
}

TEST_CASE("oversized provider answers are cut off", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransportOptions options;
  options.max_response_bytes = 1000;
  CurlTransport transport(options);
  auto reply = fakes::reply(500, std::string(5000, 'x'));
  server.push(reply);
  auto r = transport.post(json_post(server.base_url()), milliseconds(2000));
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == TransportFailure::kResponseTooLarge);
  // A 2xx is an acceptance whatever its body: cut off, never a failure (a failover would send twice).
  server.push(fakes::reply(202, std::string(5000, 'y')));
  auto accepted = transport.post(json_post(server.base_url()), milliseconds(2000));
  REQUIRE(accepted);
  CHECK(accepted.value().status == 202);
  CHECK(accepted.value().body.size() <= 1000);
}

TEST_CASE("redirects are answers, not hops", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransport transport({});
  fakes::FakeReply reply;
  reply.status = 307;
  reply.headers = {{"Location", server.base_url() + "/v3/mail/send"}};
  server.push(reply);
  auto r = transport.post(json_post(server.base_url()), milliseconds(2000));
  REQUIRE(r);
  CHECK(r.value().status == 307);
  CHECK(server.count() == 1);
}

TEST_CASE("proxy environment variables are ignored unless --proxy is given", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  fakes::RawServer proxy(fakes::RawServer::Mode::kGarbage);
  setenv("http_proxy", proxy.base_url().c_str(), 1);
  setenv("HTTPS_PROXY", proxy.base_url().c_str(), 1);
  setenv("ALL_PROXY", proxy.base_url().c_str(), 1);
  CurlTransport transport({});
  auto r = transport.post(json_post(server.base_url()), milliseconds(2000));
  unsetenv("http_proxy");
  unsetenv("HTTPS_PROXY");
  unsetenv("ALL_PROXY");
  REQUIRE(r);
  CHECK(r.value().status == 202);
  CHECK(proxy.requests() == 0);
}

TEST_CASE("a quote in a form filename is backslash-escaped on the wire, not %22", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransport transport({});
  HttpRequest r;
  r.url = server.base_url() + "/v3/mg.example.com/messages";
  r.form = {{"attachment", "x", "say \"hi\".txt", "text/plain"}};
  REQUIRE(transport.post(r, milliseconds(2000)));
  auto got = server.received();
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].form.size() == 1);
  // cpp-httplib keeps the quoted string's bytes as they came: the escape, never "%22".
  CHECK(got[0].form[0].filename == "say \\\"hi\\\".txt");
}

TEST_CASE("multipart form with a file part reaches the server intact", "[curl_transport]") {
  CurlGlobal g;
  fakes::FakeProviderServer server;
  CurlTransport transport({});
  HttpRequest r;
  r.url = server.base_url() + "/v3/mg.example.com/messages";
  r.headers = {{"Authorization", "Basic x"}};
  r.form = {{"to", "a@example.org", "", ""}, {"attachment", std::string("\0\x01\xff", 3), "a.bin", "application/octet-stream"}};
  REQUIRE(transport.post(r, milliseconds(2000)));
  auto got = server.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].form_values("to") == std::vector<std::string>{"a@example.org"});
  REQUIRE(got[0].form.size() == 2);
  const auto& file = got[0].form[0].name == "attachment" ? got[0].form[0] : got[0].form[1];
  CHECK(file.filename == "a.bin");
  CHECK(file.content_type == "application/octet-stream");
  CHECK(file.value == std::string("\0\x01\xff", 3));
}

TEST_CASE("TLS: verified against --ca-file, an unknown CA fails before anything is sent", "[curl_transport][tls]") {
  CurlGlobal g;
  fakes::TempDir dir;
  auto certs = fakes::make_test_certificates(dir);
  fakes::FakeProviderServer server(certs.cert, certs.key);
  REQUIRE(server.base_url().rfind("https://", 0) == 0);

  SECTION("trusted CA: the request goes through") {
    CurlTransportOptions options;
    options.ca_file = certs.ca;
    CurlTransport transport(options);
    auto r = transport.post(json_post(server.base_url()), milliseconds(3000));
    REQUIRE(r);
    CHECK(r.value().status == 202);
    CHECK(server.count() == 1);
  }
  SECTION("system store does not know the test CA: TLS error, not sent") {
    CurlTransport transport({});
    auto r = transport.post(json_post(server.base_url()), milliseconds(3000));
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == TransportFailure::kTls);
    CHECK_FALSE(r.error().may_have_been_sent);
    CHECK(server.count() == 0);
  }
}

TEST_CASE("no silent resend: a reused connection that dies after the request is one ambiguous attempt", "[curl_transport]") {
  CurlGlobal g;
  fakes::RawServer server(fakes::RawServer::Mode::kDropSecond);
  CurlTransport transport({});
  SECTION("JSON body (SendGrid)") {
    auto first = transport.post(json_post(server.base_url()), milliseconds(2000));
    REQUIRE(first);
    CHECK(first.value().status == 202);
    auto second = transport.post(json_post(server.base_url()), milliseconds(2000));  // reuses the connection
    REQUIRE_FALSE(second);
    CHECK(second.error().kind == TransportFailure::kConnectionLost);
    CHECK(second.error().may_have_been_sent);
  }
  SECTION("multipart form (Mailgun)") {
    HttpRequest form;
    form.url = server.base_url() + "/v3/mg.example.com/messages";
    form.form = {{"to", "a@example.org", "", ""}, {"attachment", "bytes", "a.txt", "text/plain"}};
    REQUIRE(transport.post(form, milliseconds(2000)));
    auto second = transport.post(form, milliseconds(2000));
    REQUIRE_FALSE(second);
    CHECK(second.error().may_have_been_sent);
  }
  // What the provider received and what we report agree: two calls, two requests. libcurl's
  // own retry would have delivered a third, on a fresh connection.
  for (int i = 0; i < 100 && server.requests() < 2; ++i) usleep(10 * 1000);
  usleep(200 * 1000);
  CHECK(server.requests() == 2);
}
