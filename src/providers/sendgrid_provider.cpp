// Wire format: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send, schema
// twilio/sendgrid-oai spec/json/tsg_mail_v3.json; limits:
// https://docs.sendgrid.com/api-reference/mail-send/limitations
#include "sendgrid_provider.h"

#include <nlohmann/json.hpp>

#include "base64.h"
#include "mime.h"
#include "provider_registry.h"

namespace mailrelay {
namespace {

using nlohmann::json;

json address_json(const Address& a) {
  json out{{"email", a.email}};
  if (!a.name.empty()) out["name"] = a.name;
  return out;
}

// "The to.name, cc.name, and bcc.name personalizations cannot include either the ; or ,
// characters" (limitations page): SendGrid answers 202 and then drops the message. Such a name is
// sent as a quoted string, as the official SDK does (sendgrid-python helpers/mail/email.py, "Escape
// common CSV delimiters", issue sendgrid-python#578). A name that also holds a quote or backslash
// is sent as RFC 2047 encoded-words, which hold no ',' or ';' at all; mail clients show both as
// the name the caller gave.
json recipient_json(const Address& a) {
  if (a.name.find_first_of(",;") == std::string::npos) return address_json(a);
  Address safe = a;
  safe.name = a.name.find_first_of("\"\\") == std::string::npos ? "\"" + a.name + "\""
                                                                : header_value_7bit(a.name, /*always_encode=*/true);
  return address_json(safe);
}

json recipient_list(const std::vector<Address>& list) {
  json out = json::array();
  for (const auto& a : list) out.push_back(recipient_json(a));
  return out;
}

}  // namespace

SendGridProvider::SendGridProvider(std::string base_url, std::string api_key)
    : url_(api_url(std::move(base_url), "/v3/mail/send")),
      authorization_("Bearer " + std::move(api_key)) {}

HttpRequest SendGridProvider::build_request(const Email& email, std::string_view request_id) const {
  // One personalization holds every recipient: the message is one email, as the caller sees it.
  // SendGrid refuses empty cc/bcc arrays, so they are only present when used.
  json personalization{{"to", recipient_list(email.to)}};
  if (!email.cc.empty()) personalization["cc"] = recipient_list(email.cc);
  if (!email.bcc.empty()) personalization["bcc"] = recipient_list(email.bcc);

  // "Unicode encoding is not supported for the from field" (limitations page): a non-ASCII
  // sender name goes as RFC 2047 encoded-words.
  Address from = email.from;
  from.name = header_value_7bit(from.name);
  json payload{{"personalizations", json::array({personalization})},
               {"from", address_json(from)},
               {"subject", email.subject}};
  if (email.reply_to) payload["reply_to"] = address_json(*email.reply_to);

  // SendGrid requires text/plain to come before text/html in content.
  json content = json::array();
  if (!email.text.empty()) content.push_back({{"type", "text/plain"}, {"value", email.text}});
  if (!email.html.empty()) content.push_back({{"type", "text/html"}, {"value", email.html}});
  payload["content"] = std::move(content);

  if (!email.attachments.empty()) {
    json attachments = json::array();
    for (const auto& a : email.attachments) {
      json item{{"content", base64_encode(a.content)},
                {"filename", a.filename},
                {"type", a.content_type},
                {"disposition", a.is_inline ? "inline" : "attachment"}};
      if (a.is_inline) item["content_id"] = a.content_id;  // the html's cid:<content_id>
      attachments.push_back(std::move(item));
    }
    payload["attachments"] = std::move(attachments);
  }
  if (!email.headers.empty()) {
    json headers = json::object();
    // Header values go as 7-bit text: non-ASCII ones as RFC 2047 encoded-words, which SendGrid
    // passes on as they are.
    for (const auto& [name, value] : email.headers) headers[name] = header_value_7bit(value);
    payload["headers"] = std::move(headers);
  }
  if (!email.tags.empty()) payload["categories"] = email.tags;  // distinct: uniqueItems
  // custom_args come back in every Event Webhook event: the request id joins a bounce to its
  // request (README "Delivery events and suppressions"). String values only.
  json args = json::object();
  for (const auto& [key, value] : email.metadata) args[key] = value;
  args[kRequestIdKey] = std::string(request_id);
  if (!email.client.empty()) args[kClientKey] = email.client;
  payload["custom_args"] = std::move(args);
  if (email.sandbox) payload["mail_settings"] = {{"sandbox_mode", {{"enable", true}}}};

  HttpRequest request;
  request.url = url_;
  request.headers = {{"Authorization", authorization_}};
  request.content_type = "application/json";
  request.body = payload.dump();
  return request;
}

std::string SendGridProvider::message_id(const HttpResponse& response) const {
  // 202 Accepted with an empty body; the id travels in the X-Message-Id header.
  return response.header("x-message-id");
}

std::string SendGridProvider::error_message(const HttpResponse& response) const {
  // {"errors":[{"message":"...","field":"...","help":"..."}]}
  json body = json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("errors") && body["errors"].is_array()) {
    std::string joined;
    for (const auto& e : body["errors"]) {
      if (!e.is_object() || !e.contains("message") || !e["message"].is_string()) continue;
      if (!joined.empty()) joined += "; ";
      joined += e["message"].get<std::string>();
      if (e.contains("field") && e["field"].is_string()) joined += " (" + e["field"].get<std::string>() + ")";
    }
    if (!joined.empty()) return one_line(joined);
  }
  return one_line(response.body);
}


std::optional<std::chrono::milliseconds> SendGridProvider::throttled_for(
    const HttpResponse& response, std::chrono::system_clock::time_point now) const {
  // A 429 says when the limit resets in X-RateLimit-Reset, as Unix seconds
  // (https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits).
  std::string reset = response.header("x-ratelimit-reset");
  if (reset.empty() || reset.size() > 12 || reset.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return time_until(std::chrono::system_clock::time_point(std::chrono::seconds(std::stoll(reset))), now);
}

MessageLimits SendGridProvider::limits() const {
  const std::string limitations = "sendgrid: https://docs.sendgrid.com/api-reference/mail-send/limitations";
  const std::string schema = "sendgrid: twilio/sendgrid-oai spec/json/tsg_mail_v3.json";
  MessageLimits limits;
  limits.recipients = Limit{1000, {limitations + " (to + cc + bcc)"}};
  limits.tags = Limit{10, {schema + " (categories maxItems 10)"}};
  limits.tag_length = Limit{255, {schema + " (a category cannot exceed 255 characters)"}};
  // "The total length of custom arguments must be less than 10000 bytes": counted as JSON with
  // spaces (metadata_size), which is never shorter than what is sent.
  limits.metadata_bytes = Limit{9999, {limitations + " (custom arguments less than 10000 bytes)"}};
  limits.attachment_min_bytes = Limit{1, {schema + " (attachments[].content minLength 1)"}};
  return limits;
}


const ProviderDescriptor& sendgrid_descriptor() {
  static const ProviderDescriptor kDescriptor{
      "sendgrid",
      {{"base-url", "https://api.sendgrid.com", "SendGrid API base URL (EU: https://api.eu.sendgrid.com)"}},
      {{"api-key", "API key", "SENDGRID_API_KEY", "sendgrid_api_key", true}},
      nullptr,
      [](const ProviderConfig& c, HttpTransport& transport, Clock&) -> Result<std::unique_ptr<EmailProvider>> {
        return make_http_provider(c.name,
                                  std::make_unique<SendGridProvider>(c.option("base-url"), c.secret("api-key")),
                                  transport);
      },
      sendgrid_webhook()};
  return kDescriptor;
}

}  // namespace mailrelay
