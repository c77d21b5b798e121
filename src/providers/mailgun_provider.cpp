// Wire format: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages;
// the OpenAPI bundled in mailgun/mailgun-mcp-server src/openapi.yaml; errors and limits in
// mailgun/documentation source/api-sending.rst and source/user_manual.rst.
#include "mailgun_provider.h"

#include <nlohmann/json.hpp>

#include "base64.h"
#include "mime.h"
#include "provider_registry.h"

namespace mailrelay {

MailgunProvider::MailgunProvider(std::string base_url, std::string domain, std::string api_key)
    : url_(api_url(std::move(base_url), "/v3/" + domain + "/messages")),
      authorization_("Basic " + base64_encode("api:" + api_key)) {}

HttpRequest MailgunProvider::build_request(const Email& email, std::string_view request_id) const {
  HttpRequest request;
  request.url = url_;
  request.headers = {{"Authorization", authorization_}};  // HTTP Basic, user "api"
  auto& f = request.form;
  f.push_back({"from", format_address(email.from), "", ""});
  // Repeated to/cc/bcc fields, one address each: a display name may contain a comma.
  for (const auto& a : email.to) f.push_back({"to", format_address(a), "", ""});
  for (const auto& a : email.cc) f.push_back({"cc", format_address(a), "", ""});
  for (const auto& a : email.bcc) f.push_back({"bcc", format_address(a), "", ""});
  f.push_back({"subject", email.subject, "", ""});
  if (!email.text.empty()) f.push_back({"text", email.text, "", ""});
  if (!email.html.empty()) f.push_back({"html", email.html, "", ""});
  if (email.reply_to) f.push_back({"h:Reply-To", format_address(*email.reply_to), "", ""});
  for (const auto& [name, value] : email.headers) f.push_back({"h:" + name, value, "", ""});
  for (const auto& tag : email.tags) f.push_back({"o:tag", tag, "", ""});
  for (const auto& [key, value] : email.metadata) f.push_back({"v:" + key, value, "", ""});
  // v: variables come back in every event and webhook: the request id joins a bounce to its
  // request (README "Delivery events and suppressions").
  f.push_back({std::string("v:") + kRequestIdKey, std::string(request_id), "", ""});
  if (!email.client.empty()) f.push_back({std::string("v:") + kClientKey, email.client, "", ""});
  // "Mailgun will accept the message but will not send it" (user_manual.rst, Sending in Test Mode).
  if (email.sandbox) f.push_back({"o:testmode", "yes", "", ""});
  for (const auto& a : email.attachments) {
    // Mailgun gives each `inline` file the content id of its file name ("Note how image is
    // referenced in HTML part simply by the filename", user_manual.rst, Sending Inline Images),
    // so the part is named by its content id: cid:<content_id> works as on every provider.
    if (a.is_inline) f.push_back({"inline", a.content, a.content_id, a.content_type});
    else f.push_back({"attachment", a.content, a.filename, a.content_type});
  }
  return request;
}

std::string MailgunProvider::message_id(const HttpResponse& response) const {
  // 200 {"id":"<20260101.1234@mg.example.com>","message":"Queued. Thank you."}
  auto body = nlohmann::json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("id") && body["id"].is_string()) return body["id"].get<std::string>();
  return {};
}

std::string MailgunProvider::error_message(const HttpResponse& response) const {
  // Errors are {"message":"..."}, except a bad API key: 401 with the plain-text body "Forbidden".
  auto body = nlohmann::json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("message") && body["message"].is_string()) {
    return one_line(body["message"].get<std::string>());
  }
  return one_line(response.body);
}

namespace {

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

}  // namespace

AttemptOutcome MailgunProvider::classify(const HttpResponse& response) const {
  // "404 Domain not found: example.com" and "400 Domain example.com is not allowed to send: ..."
  // (api-sending.rst, error codes) say the sending domain or account is unusable, whatever the
  // message: an error that counts toward the circuit (README "Provider health and the retry budget"), not a refusal of it.
  if (response.status == 400 || response.status == 404) {
    std::string message = error_message(response);
    if (contains(message, "Domain not found") || contains(message, "not allowed to send")) return AttemptOutcome::kError;
  }
  return classify_http_status(response.status);
}

std::optional<std::chrono::milliseconds> MailgunProvider::throttled_for(
    const HttpResponse& response, std::chrono::system_clock::time_point now) const {
  // A 429 says when in its message: "... limit exceeded, try again after 120 seconds"
  // (openapi.yaml) or "... try again after Mon, 20 Dec 2021 20:33:21 UTC" (api-sending.rst):
  // a Retry-After value either way, once " seconds" is cut off.
  const std::string message = error_message(response);
  constexpr std::string_view kMarker = "try again after ";
  std::size_t at = message.find(kMarker);
  if (at == std::string::npos) return std::nullopt;
  std::string when = message.substr(at + kMarker.size());
  if (std::size_t unit = when.find(" seconds"); unit != std::string::npos) when.resize(unit);
  return parse_retry_after(when, now);
}

MessageLimits MailgunProvider::limits() const {
  const std::string manual = "mailgun: mailgun/documentation source/user_manual.rst";
  const std::string openapi = "mailgun: mailgun/mailgun-mcp-server src/openapi.yaml";
  MessageLimits limits;
  limits.recipients = Limit{1000, {manual + " (at most 1,000 recipients a message)"}};
  limits.tags = Limit{3, {manual + " (up to 3 tags)"}};
  limits.tag_length = Limit{128, {manual + " (maximum tag length is 128 characters)"}};
  // "Anything over 4KB will be truncated in the event/webhooks": read as 4,000 bytes for all
  // variables together, the request id stamp included, the reading that cannot lose a byte.
  limits.metadata_bytes = Limit{4000, {openapi + " (v: variables, anything over 4KB truncated in events)"}};
  // "Send options (parameters starting with o:, h:, v:, or t:) are limited to 16KB total": read as
  // 16,000 bytes of field names and values.
  limits.options_bytes = Limit{16000, {openapi + " (o:, h:, v:, t: options limited to 16KB total)"}};
  return limits;
}


const ProviderDescriptor& mailgun_descriptor() {
  static const ProviderDescriptor kDescriptor{
      "mailgun",
      {{"base-url", "https://api.mailgun.net", "Mailgun API base URL (EU: https://api.eu.mailgun.net)"},
       {"domain", "", "Mailgun sending domain"}},
      {{"api-key", "API key", "MAILGUN_API_KEY", "mailgun_api_key", true}},
      [](const ProviderConfig& c) -> std::optional<std::string> {
        const std::string& domain = c.option("domain");
        if (domain.empty()) return std::string("provider 'mailgun' is listed in --providers but --mailgun-domain is not set");
        if (!is_valid_addr_spec("postmaster@" + domain)) return "--mailgun-domain is not a valid domain name: " + domain;
        return std::nullopt;
      },
      [](const ProviderConfig& c, HttpTransport& transport, Clock&) -> Result<std::unique_ptr<EmailProvider>> {
        return make_http_provider(c.name,
                                  std::make_unique<MailgunProvider>(c.option("base-url"), c.option("domain"), c.secret("api-key")),
                                  transport);
      },
      mailgun_webhook()};
  return kDescriptor;
}

}  // namespace mailrelay
