// FakeTransport: an HttpTransport that answers from a script and advances a FakeClock by each
// answer's latency (capped by the caller's timeout, as a real timeout would be). Thread-safe.
#pragma once

#include <deque>
#include <functional>
#include <mutex>
#include <variant>
#include <vector>

#include "fake_clock.h"
#include "http_transport.h"

namespace fakes {

struct ScriptedAnswer {
  std::variant<mailrelay::HttpResponse, mailrelay::TransportError> answer;
  std::chrono::milliseconds latency{10};
};

inline ScriptedAnswer http(long status, std::string body = "", std::vector<std::pair<std::string, std::string>> headers = {},
                           std::chrono::milliseconds latency = std::chrono::milliseconds(10)) {
  mailrelay::HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return {r, latency};
}

inline ScriptedAnswer failure(mailrelay::TransportFailure kind, bool may_have_been_sent,
                              std::chrono::milliseconds latency = std::chrono::milliseconds(10)) {
  return {mailrelay::TransportError{kind, may_have_been_sent, "scripted"}, latency};
}

class FakeTransport final : public mailrelay::HttpTransport {
 public:
  explicit FakeTransport(FakeClock& clock) : clock_(clock) {}

  // Answers by request once the script is used up (e.g. by URL: one provider down, one up).
  std::function<ScriptedAnswer(const mailrelay::HttpRequest&)> responder;

  void push(ScriptedAnswer a) {
    std::lock_guard<std::mutex> lock(mutex_);
    script_.push_back(std::move(a));
  }

  mailrelay::Result<mailrelay::HttpResponse, mailrelay::TransportError> post(
      const mailrelay::HttpRequest& request, std::chrono::milliseconds timeout) override {
    ScriptedAnswer a;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(request);
      timeouts_.push_back(timeout);
      if (script_.empty()) {
        a = responder ? responder(request) : failure(mailrelay::TransportFailure::kConnect, false);
      } else {
        a = script_.front();
        script_.pop_front();
      }
    }
    if (a.latency >= timeout) {  // the answer would come too late: a real transport times out
      clock_.advance(timeout);
      return mailrelay::TransportError{mailrelay::TransportFailure::kTimeout, true, "timed out"};
    }
    clock_.advance(a.latency);
    if (auto* r = std::get_if<mailrelay::HttpResponse>(&a.answer)) return *r;
    return std::get<mailrelay::TransportError>(a.answer);
  }

  std::vector<mailrelay::HttpRequest> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  std::vector<std::chrono::milliseconds> timeouts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return timeouts_;
  }

 private:
  FakeClock& clock_;
  std::mutex mutex_;
  std::deque<ScriptedAnswer> script_;
  std::vector<mailrelay::HttpRequest> requests_;
  std::vector<std::chrono::milliseconds> timeouts_;
};

}  // namespace fakes
