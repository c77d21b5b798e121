// FakeProviderServer: a real HTTP(S) server on 127.0.0.1:0 that speaks SendGrid's, Mailgun's,
// Postmark's, Elastic Email's and Amazon SES's wire formats (success and error shapes) and can be scripted to fail, throttle or hang.
// Thread-safe. Stops (and releases any hung request) on destruction.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>

namespace fakes {

inline constexpr const char* kSendGridKey = "SG.fake-test-key-not-a-secret";
inline constexpr const char* kMailgunKey = "fake-mailgun-key-not-a-secret";
inline constexpr const char* kMailgunDomain = "mg.example.com";
inline constexpr const char* kPostmarkToken = "fake-postmark-token-not-a-secret";
inline constexpr const char* kElasticEmailKey = "fake-elasticemail-key-not-a-secret";
inline constexpr const char* kSesAccessKeyId = "AKIAFAKEFAKEFAKEFAKE";
inline constexpr const char* kSesSecretKey = "fake-ses-secret-key-not-a-secret";
inline constexpr const char* kSesRegion = "eu-west-1";

struct FakeReply {
  int status = 0;  // 0 = the provider's normal success answer
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds delay{0};
  bool hang = false;  // never answer (until released or the server stops)
};

// Shorthands for scripted answers.
inline FakeReply reply(int status, std::string body, std::string content_type = "application/json") {
  FakeReply r;
  r.status = status;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  return r;
}
inline FakeReply hang() {
  FakeReply r;
  r.hang = true;
  return r;
}

struct FormPart {
  std::string name, value, filename, content_type;
};

struct ReceivedRequest {
  std::string path;
  int remote_port = 0;  // tells connections apart: reuse keeps the port
  std::multimap<std::string, std::string> headers;  // as httplib stores them
  std::string body;                                  // raw, for JSON requests
  std::vector<FormPart> form;                        // parsed multipart fields, for Mailgun
  std::string header(const std::string& name) const;
  std::vector<std::string> form_values(const std::string& name) const;
};

class FakeProviderServer {
 public:
  FakeProviderServer();                                            // plain HTTP
  FakeProviderServer(const std::string& cert, const std::string& key);  // HTTPS
  ~FakeProviderServer();
  FakeProviderServer(const FakeProviderServer&) = delete;
  FakeProviderServer& operator=(const FakeProviderServer&) = delete;

  std::string base_url() const;  // http(s)://127.0.0.1:PORT
  int port() const { return port_; }

  // Scripted answers, used in order; once they run out every request gets the success answer.
  void push(FakeReply reply);
  void push_n(int n, const FakeReply& reply);
  // How long every unscripted answer waits from now on (a provider that slows down, or recovers).
  void set_delay(std::chrono::milliseconds delay);

  std::vector<ReceivedRequest> received() const;
  std::size_t count() const;

 private:
  void start();
  void handle(const httplib::Request& req, httplib::Response& res);
  void postmark(const httplib::Request& req, httplib::Response& res, int id);
  void elasticemail(const httplib::Request& req, httplib::Response& res, int id);
  void ses(const httplib::Request& req, httplib::Response& res, int id);

  std::unique_ptr<httplib::Server> server_;
  bool tls_ = false;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable released_;
  bool stopping_ = false;
  std::deque<FakeReply> script_;
  std::chrono::milliseconds delay_{0};
  std::vector<ReceivedRequest> received_;
  int next_id_ = 1;
};

}  // namespace fakes
