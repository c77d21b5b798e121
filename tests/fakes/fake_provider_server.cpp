#include "fake_provider_server.h"

#include <sys/socket.h>

#include <ctime>
#include <set>

#include <nlohmann/json.hpp>

#include "base64.h"
#include "sigv4.h"
#include "test_helpers.h"

namespace fakes {

using nlohmann::json;

std::string ReceivedRequest::header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
  }
  return {};
}

std::vector<std::string> ReceivedRequest::form_values(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& p : form) {
    if (p.name == name) out.push_back(p.value);
  }
  return out;
}

namespace {
// The listening socket of any httplib::Server (a protected member, reached through a member
// pointer taken inside a derived class).
struct ListenSocket : httplib::Server {
  static int of(httplib::Server& server) { return (server.*(&ListenSocket::svr_sock_)).load(); }
};
}  // namespace

FakeProviderServer::FakeProviderServer() : server_(std::make_unique<httplib::Server>()) { start(); }

FakeProviderServer::FakeProviderServer(const std::string& cert, const std::string& key)
    : server_(std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str())), tls_(true) {
  start();
}

void FakeProviderServer::start() {
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); };
  server_->Post(R"(/v3/mail/send)", handler);
  server_->Post(R"(/v3/([^/]+)/messages)", handler);
  server_->Post(R"(/email)", handler);
  server_->Post(R"(/v4/emails/transactional)", handler);
  server_->Post(R"(/v2/email/outbound-emails)", handler);
  server_->set_keep_alive_max_count(1000);
  // Enough workers to hold many slow or hanging answers at once (the library default is 8).
  server_->new_task_queue = [] { return new httplib::ThreadPool(64); };
  port_ = server_->bind_to_any_port("127.0.0.1");
  // cpp-httplib listens with a backlog of 5: twenty relay workers connecting at once would lose
  // SYNs and wait seconds for the retransmit (the SIGTERM drain test saw 12 of 20 arrive).
  ::listen(ListenSocket::of(*server_), 1024);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  fakes::wait_until_running(*server_);
}

FakeProviderServer::~FakeProviderServer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  released_.notify_all();
  server_->stop();
  thread_.join();
}

std::string FakeProviderServer::base_url() const {
  return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
}

void FakeProviderServer::push(FakeReply reply) {
  std::lock_guard<std::mutex> lock(mutex_);
  script_.push_back(std::move(reply));
}

void FakeProviderServer::set_delay(std::chrono::milliseconds delay) {
  std::lock_guard<std::mutex> lock(mutex_);
  delay_ = delay;
}

void FakeProviderServer::push_n(int n, const FakeReply& reply) {
  for (int i = 0; i < n; ++i) push(reply);
}

std::vector<ReceivedRequest> FakeProviderServer::received() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return received_;
}

std::size_t FakeProviderServer::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return received_.size();
}

namespace {

// What the real SendGrid v3 API checks before it answers 202; the messages follow its error
// list (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors).
std::string sendgrid_problem(const std::string& body) {
  json doc = json::parse(body, nullptr, false);
  if (!doc.is_object()) return "Bad Request";
  if (!doc.contains("personalizations") || !doc["personalizations"].is_array() || doc["personalizations"].empty()) {
    return "You must have at least one personalization.";
  }
  std::set<std::string> seen;
  for (const auto& p : doc["personalizations"]) {
    if (!p.contains("to") || p["to"].empty()) return "The to parameter is required for all personalization objects.";
    for (const char* list : {"to", "cc", "bcc"}) {
      if (!p.contains(list)) continue;
      if (p[list].empty()) return std::string("The ") + list + " array must have at least one recipient.";
      for (const auto& r : p[list]) {
        std::string email = r.value("email", "");
        std::transform(email.begin(), email.end(), email.begin(), ::tolower);
        if (!seen.insert(email).second) {
          return "Each email address in the personalization block should be unique between to, cc, and bcc.";
        }
      }
    }
  }
  if (!doc.contains("from") || !doc["from"].contains("email")) return "The from object must be provided for every email send.";
  if (!doc.contains("subject") || doc["subject"].get<std::string>().empty()) return "The subject is required.";
  if (!doc.contains("content") || doc["content"].empty()) return "Unless a valid template_id is provided, the content parameter is required.";
  if (doc["content"][0]["type"] != "text/plain" && doc["content"].size() > 1) {
    return "If present, text/plain content must be first, followed by any other content.";
  }
  return {};
}

}  // namespace

// Postmark (https://postmarkapp.com/developer/api/email-api): the server token or the test token,
// From and To and a body required, 422 {"ErrorCode", "Message"} otherwise.
void FakeProviderServer::postmark(const httplib::Request& req, httplib::Response& res, int id) {
  const std::string token = req.get_header_value("X-Postmark-Server-Token");
  if (token != kPostmarkToken && token != "POSTMARK_API_TEST") {
    res.status = 401;
    res.set_content(R"({"ErrorCode":10,"Message":"The Server Token you provided in the X-Postmark-Server-Token request header was invalid."})",
                    "application/json");
    return;
  }
  json doc = json::parse(req.body, nullptr, false);
  auto refuse = [&](int code, const std::string& message) {
    res.status = 422;
    res.set_content(json{{"ErrorCode", code}, {"Message", message}}.dump(), "application/json");
  };
  if (!doc.is_object()) return refuse(402, "Received invalid JSON input.");
  if (!doc.contains("From") || !doc.contains("To")) return refuse(300, "Invalid email request: From and To are required.");
  if (!doc.contains("HtmlBody") && !doc.contains("TextBody")) return refuse(300, "Provide either email TextBody or HtmlBody or both.");
  res.status = 200;
  res.set_content(json{{"To", doc["To"]}, {"SubmittedAt", "2026-11-23T12:00:00.0000000-05:00"},
                       {"MessageID", "fake-pm-" + std::to_string(id)}, {"ErrorCode", 0}, {"Message", "OK"}}.dump(),
                  "application/json");
}

// Elastic Email v4 (EmailsApi emails_transactional_post): the key in X-ElasticEmail-ApiKey,
// Recipients.To and Content.From required, 200 EmailSend {"TransactionID", "MessageID"}.
void FakeProviderServer::elasticemail(const httplib::Request& req, httplib::Response& res, int id) {
  if (req.get_header_value("X-ElasticEmail-ApiKey") != kElasticEmailKey) {
    res.status = 401;
    res.set_content(R"({"Error":"Access denied."})", "application/json");
    return;
  }
  json doc = json::parse(req.body, nullptr, false);
  if (!doc.is_object() || !doc.contains("Recipients") || !doc["Recipients"].contains("To") ||
      !doc.contains("Content") || !doc["Content"].contains("From")) {
    res.status = 400;
    res.set_content(R"({"Error":"Recipients and Content.From are required."})", "application/json");
    return;
  }
  res.status = 200;
  res.set_content(json{{"TransactionID", "fake-ee-tx-" + std::to_string(id)}, {"MessageID", "fake-ee-" + std::to_string(id)}}.dump(),
                  "application/json");
}

// Amazon SES v2 SendEmail: the request must carry a Signature Version 4 for the fake credentials
// over what actually arrived (Host, Content-Type, body, X-Amz-Date), else 403
// SignatureDoesNotMatch; Content.Raw.Data must be base64 MIME; 200 {"MessageId"}.
void FakeProviderServer::ses(const httplib::Request& req, httplib::Response& res, int id) {
  auto refuse = [&](int status, const std::string& type, const std::string& message) {
    res.status = status;
    res.set_header("x-amzn-ErrorType", type + ":http://internal.amazon.com/coral/com.amazon.coral.service/");
    res.set_content(json{{"message", message}}.dump(), "application/json");
  };
  const std::string date = req.get_header_value("X-Amz-Date");
  std::tm tm{};
  if (date.size() != 16 || !strptime(date.c_str(), "%Y%m%dT%H%M%SZ", &tm)) return refuse(400, "IncompleteSignature", "no X-Amz-Date");
  const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
  mailrelay::AwsCredentials credentials{kSesAccessKeyId, kSesSecretKey, req.get_header_value("X-Amz-Security-Token")};
  std::string expected;
  for (const auto& [name, value] : mailrelay::sigv4_sign(
           {"POST", req.get_header_value("Host"), req.path, {{"Content-Type", req.get_header_value("Content-Type")}}, req.body},
           kSesRegion, "ses", credentials, when)) {
    if (name == "Authorization") expected = value;
  }
  if (req.get_header_value("Authorization") != expected) {
    return refuse(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
  }
  json doc = json::parse(req.body, nullptr, false);
  if (!doc.is_object() || !doc.contains("Content") || !doc["Content"].contains("Raw") ||
      !mailrelay::base64_decode(doc["Content"]["Raw"].value("Data", "")) || !doc.contains("Destination")) {
    return refuse(400, "BadRequestException", "Content.Raw.Data and Destination are required.");
  }
  res.status = 200;
  res.set_content(json{{"MessageId", "fake-ses-" + std::to_string(id)}}.dump(), "application/json");
}

void FakeProviderServer::handle(const httplib::Request& req, httplib::Response& res) {
  bool sendgrid = req.path == "/v3/mail/send";
  ReceivedRequest record;
  record.path = req.path;
  record.remote_port = req.remote_port;
  record.headers.insert(req.headers.begin(), req.headers.end());
  record.body = req.body;
  for (const auto& [name, file] : req.files) {
    record.form.push_back({file.name, file.content, file.filename, file.content_type});
  }

  FakeReply reply;
  int id = 0;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    received_.push_back(record);
    id = next_id_++;
    if (!script_.empty()) {
      reply = script_.front();
      script_.pop_front();
    } else {
      reply.delay = delay_;
    }
    if (reply.hang) {
      released_.wait_for(lock, std::chrono::seconds(30), [this] { return stopping_; });
      res.status = 500;
      res.set_content("", "text/plain");
      return;
    }
  }
  if (reply.delay.count() > 0) {
    std::unique_lock<std::mutex> lock(mutex_);
    released_.wait_for(lock, reply.delay, [this] { return stopping_; });
  }
  for (const auto& [k, v] : reply.headers) res.set_header(k, v);
  if (reply.status != 0) {
    res.status = reply.status;
    res.set_content(reply.body, reply.content_type);
    return;
  }

  // The provider's own checks, then its success answer.
  if (req.path == "/email") {
    postmark(req, res, id);
    return;
  }
  if (req.path == "/v4/emails/transactional") {
    elasticemail(req, res, id);
    return;
  }
  if (req.path == "/v2/email/outbound-emails") {
    ses(req, res, id);
    return;
  }
  if (sendgrid) {
    if (req.get_header_value("Authorization") != std::string("Bearer ") + kSendGridKey) {
      res.status = 401;
      res.set_content(R"({"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null,"help":null}]})", "application/json");
      return;
    }
    std::string problem = sendgrid_problem(req.body);
    if (!problem.empty()) {
      res.status = 400;
      res.set_content(json{{"errors", {{{"message", problem}, {"field", nullptr}, {"help", nullptr}}}}}.dump(), "application/json");
      return;
    }
    res.status = 202;
    res.set_header("X-Message-Id", "fake-sg-" + std::to_string(id));
    return;
  }
  std::string expected = "Basic " + mailrelay::base64_encode(std::string("api:") + kMailgunKey);
  if (req.get_header_value("Authorization") != expected) {
    res.status = 401;
    res.set_content("Forbidden", "text/plain");  // Mailgun answers a bad key in plain text
    return;
  }
  auto has = [&](const char* name) { return !record.form_values(name).empty(); };
  const char* missing = !has("from") ? "from" : !has("to") ? "to" : !has("subject") ? "subject" : nullptr;
  if (missing) {
    res.status = 400;
    res.set_content(json{{"message", std::string("'") + missing + "' parameter is missing"}}.dump(), "application/json");
    return;
  }
  if (!has("text") && !has("html")) {
    res.status = 400;
    res.set_content(R"({"message":"Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"})", "application/json");
    return;
  }
  res.status = 200;
  res.set_content(json{{"id", "<20261122." + std::to_string(id) + "@" + kMailgunDomain + ">"},
                       {"message", "Queued. Thank you."}}.dump(), "application/json");
}

}  // namespace fakes
