// HttpProvider: an EmailProvider that speaks to an HTTP API through an HttpTransport, with the
// provider's wire format supplied by a pure ProviderApi translator (every provider but the outbox).
// Thread-safe when the transport is.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "email_provider.h"
#include "http_transport.h"
#include "result.h"

namespace mailrelay {

// What an HTTP status means for a send (README "API" and "Provider health and the retry budget", `outcome`).
AttemptOutcome classify_http_status(long status);

// A provider's wire format: pure functions, tested against golden payloads.
class ProviderApi {
 public:
  virtual ~ProviderApi() = default;
  // `request_id` is stamped where the provider's events hand it back (README "Delivery events and suppressions").
  virtual HttpRequest build_request(const Email& email, std::string_view request_id) const = 0;
  // The provider's message id from a 2xx answer ("" when it gave none).
  virtual std::string message_id(const HttpResponse& response) const = 0;
  // A short, single-line reason from an error answer's body.
  virtual std::string error_message(const HttpResponse& response) const = 0;
  // The outcome of an answer. By default classify_http_status(); a provider overrides it where
  // its answers say more than the status (an unusable account is an error, not a refusal).
  virtual AttemptOutcome classify(const HttpResponse& response) const { return classify_http_status(response.status); }
  // How long a throttled provider asked us to wait when it sent no Retry-After: its own signal
  // (a header, a sentence in the body). By default none.
  virtual std::optional<std::chrono::milliseconds> throttled_for(const HttpResponse& /*response*/,
                                                                 std::chrono::system_clock::time_point /*now*/) const {
    return std::nullopt;
  }
  // True when the answer says "too many requests". By default a 429.
  virtual bool throttled(const HttpResponse& response) const { return response.status == 429; }
  virtual MessageLimits limits() const = 0;
  virtual bool supports_sandbox() const = 0;
};

// How long a provider that throttled without saying until when is parked.
inline constexpr std::chrono::milliseconds kUnnamedThrottlePark{1000};

// Parses a Retry-After value: delta-seconds or an HTTP-date relative to `now`.
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

// How long from `now` until `when`; zero when it has passed.
std::chrono::milliseconds time_until(std::chrono::system_clock::time_point when,
                                     std::chrono::system_clock::time_point now);

// Interprets a complete HTTP answer with `api` (status class, id, error text, Retry-After).
AttemptResult interpret_response(const ProviderApi& api, const HttpResponse& response,
                                 std::chrono::system_clock::time_point now);

// Turns a transport failure into an attempt result (timeout vs error, may_have_been_sent).
AttemptResult interpret_transport_error(const TransportError& error);

// `base` (with or without a trailing slash) followed by `path` ("/v3/...").
std::string api_url(std::string base, std::string_view path);

// Keeps at most `max` bytes of provider text on one line, for error fields and logs.
std::string one_line(std::string_view text, std::size_t max = 200);

class HttpProvider final : public EmailProvider {
 public:
  HttpProvider(std::string name, std::unique_ptr<ProviderApi> api, HttpTransport& transport);
  const std::string& name() const override { return name_; }
  AttemptResult send(const Email& email, std::string_view request_id,
                     std::chrono::milliseconds timeout) override;
  MessageLimits limits() const override { return api_->limits(); }
  bool supports_sandbox() const override { return api_->supports_sandbox(); }

 private:
  std::string name_;
  std::unique_ptr<ProviderApi> api_;
  HttpTransport& transport_;
};

// For a descriptor's factory: provider `name` speaking `api` over `transport`.
Result<std::unique_ptr<EmailProvider>> make_http_provider(std::string name, std::unique_ptr<ProviderApi> api,
                                                          HttpTransport& transport);

}  // namespace mailrelay
