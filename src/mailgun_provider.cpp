// Wire format: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages
#include "mailgun_provider.h"

#include <nlohmann/json.hpp>

#include "base64.h"
#include "mime.h"

namespace mailrelay {

MailgunProvider::MailgunProvider(std::string base_url, std::string domain, std::string api_key)
    : url_(api_url(std::move(base_url), "/v3/" + domain + "/messages")),
      authorization_("Basic " + base64_encode("api:" + api_key)) {}

HttpRequest MailgunProvider::build_request(const Email& email) const {
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
  for (const auto& a : email.attachments) f.push_back({"attachment", a.content, a.filename, a.content_type});
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

}  // namespace mailrelay
