// Wire format: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
#include "sendgrid_provider.h"

#include <nlohmann/json.hpp>

#include "base64.h"

namespace mailrelay {
namespace {

using nlohmann::json;

json address_json(const Address& a) {
  json out{{"email", a.email}};
  if (!a.name.empty()) out["name"] = a.name;
  return out;
}

json address_list(const std::vector<Address>& list) {
  json out = json::array();
  for (const auto& a : list) out.push_back(address_json(a));
  return out;
}

}  // namespace

SendGridProvider::SendGridProvider(std::string base_url, std::string api_key)
    : url_(api_url(std::move(base_url), "/v3/mail/send")),
      authorization_("Bearer " + std::move(api_key)) {}

HttpRequest SendGridProvider::build_request(const Email& email) const {
  // One personalization holds every recipient: the message is one email, as the caller sees it.
  // SendGrid refuses empty cc/bcc arrays, so they are only present when used.
  json personalization{{"to", address_list(email.to)}};
  if (!email.cc.empty()) personalization["cc"] = address_list(email.cc);
  if (!email.bcc.empty()) personalization["bcc"] = address_list(email.bcc);

  json payload{{"personalizations", json::array({personalization})},
               {"from", address_json(email.from)},
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
      attachments.push_back({{"content", base64_encode(a.content)},
                             {"filename", a.filename},
                             {"type", a.content_type},
                             {"disposition", "attachment"}});
    }
    payload["attachments"] = std::move(attachments);
  }
  if (!email.headers.empty()) {
    json headers = json::object();
    for (const auto& [name, value] : email.headers) headers[name] = value;
    payload["headers"] = std::move(headers);
  }
  if (!email.tags.empty()) payload["categories"] = email.tags;
  if (!email.metadata.empty()) {
    json args = json::object();
    for (const auto& [key, value] : email.metadata) args[key] = value;  // SendGrid: string values only
    payload["custom_args"] = std::move(args);
  }

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

}  // namespace mailrelay
