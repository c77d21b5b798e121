#include "http_provider.h"

#include "ascii.h"

#include <algorithm>
#include <cctype>
#include <string>

#include <curl/curl.h>

namespace mailrelay {

std::string_view to_string(AttemptOutcome outcome) {
  switch (outcome) {
    case AttemptOutcome::kSent: return "sent";
    case AttemptOutcome::kRejected: return "rejected";
    case AttemptOutcome::kError: return "error";
    case AttemptOutcome::kTimeout: return "timeout";
    case AttemptOutcome::kSkipped: return "skipped";
  }
  return "error";
}

std::string_view to_string(TransportFailure kind) {
  switch (kind) {
    case TransportFailure::kResolve: return "dns";
    case TransportFailure::kConnect: return "connect";
    case TransportFailure::kTls: return "tls";
    case TransportFailure::kTimeout: return "timeout";
    case TransportFailure::kConnectionLost: return "connection_lost";
    case TransportFailure::kProtocol: return "protocol";
    case TransportFailure::kResponseTooLarge: return "response_too_large";
    case TransportFailure::kOther: return "transport";
  }
  return "transport";
}

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return {};
}

AttemptOutcome classify_http_status(long status) {
  if (status >= 200 && status < 300) return AttemptOutcome::kSent;
  // 401/403: our credentials are wrong for this provider, not the message: another provider may
  // take it. 408/429: the provider asks us to come back later.
  if (status == 401 || status == 403 || status == 408 || status == 429) return AttemptOutcome::kError;
  if (status >= 400 && status < 500) return AttemptOutcome::kRejected;
  return AttemptOutcome::kError;  // 5xx, and 1xx/3xx which we never expect (no redirects)
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::chrono::system_clock::time_point now) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (value.size() > 9) return std::chrono::milliseconds(999'999'999'000LL);  // absurd: "never"
    return std::chrono::seconds(std::stol(std::string(value)));
  }
  time_t when = curl_getdate(std::string(value).c_str(), nullptr);  // RFC 7231 HTTP-date
  if (when < 0) return std::nullopt;
  return time_until(std::chrono::system_clock::from_time_t(when), now);
}

std::chrono::milliseconds time_until(std::chrono::system_clock::time_point when,
                                     std::chrono::system_clock::time_point now) {
  return std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(when - now));
}

std::string api_url(std::string base, std::string_view path) {
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base.append(path);
}

std::string one_line(std::string_view text, std::size_t max) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max) break;
    unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

AttemptResult interpret_response(const ProviderApi& api, const HttpResponse& response,
                                 std::chrono::system_clock::time_point now) {
  AttemptResult result;
  result.http_status = static_cast<int>(response.status);
  result.outcome = api.classify(response);
  if (result.outcome == AttemptOutcome::kSent) {
    result.message_id = api.message_id(response);
    return result;
  }
  result.error = api.error_message(response);
  if (result.error.empty()) result.error = "HTTP " + std::to_string(response.status);
  result.throttled = api.throttled(response);
  if (result.throttled || response.status == 503) {
    result.retry_after = parse_retry_after(response.header("retry-after"), now);
    if (!result.retry_after) result.retry_after = api.throttled_for(response, now);
  }
  // A throttle that names no time still parks the provider (SPEC: any 429 parks it unless its
  // documentation says otherwise; none of ours does): one second, then the next throttle parks
  // it again.
  if (result.throttled && (!result.retry_after || result.retry_after->count() <= 0)) {
    result.retry_after = kUnnamedThrottlePark;
  }
  // A 502 or 504 comes from a gateway in front of the provider: the service behind it may have
  // taken the message before the gateway gave up (README "Provider health and the retry budget"). Any other error status is
  // the provider itself saying it did not take the message.
  result.may_have_been_sent = response.status == 502 || response.status == 504;
  return result;
}

AttemptResult interpret_transport_error(const TransportError& error) {
  AttemptResult result;
  result.outcome = error.kind == TransportFailure::kTimeout ? AttemptOutcome::kTimeout : AttemptOutcome::kError;
  result.may_have_been_sent = error.may_have_been_sent;
  result.error = std::string(to_string(error.kind)) + ": " + error.message;
  return result;
}

HttpProvider::HttpProvider(std::string name, std::unique_ptr<ProviderApi> api, HttpTransport& transport)
    : name_(std::move(name)), api_(std::move(api)), transport_(transport) {}

AttemptResult HttpProvider::send(const Email& email, std::string_view request_id,
                                 std::chrono::milliseconds timeout) {
  auto response = transport_.post(api_->build_request(email, request_id), timeout);
  if (!response) return interpret_transport_error(response.error());
  return interpret_response(*api_, response.value(), std::chrono::system_clock::now());
}

Result<std::unique_ptr<EmailProvider>> make_http_provider(std::string name, std::unique_ptr<ProviderApi> api,
                                                          HttpTransport& transport) {
  return std::unique_ptr<EmailProvider>(new HttpProvider(std::move(name), std::move(api), transport));
}

}  // namespace mailrelay
