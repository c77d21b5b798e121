// Wire format: Elastic Email REST API v4 (OpenAPI 4.0.0, as generated into the official SDKs,
// e.g. ElasticEmail/elasticemail-python docs/EmailsApi.md "emails_transactional_post",
// EmailTransactionalMessageData, TransactionalRecipient, EmailContent, BodyPart, MessageAttachment,
// Options, EmailSend); the key goes in the X-ElasticEmail-ApiKey header (configuration.py).
#include "elasticemail_provider.h"

#include <nlohmann/json.hpp>

#include "ascii.h"
#include "base64.h"
#include "mime.h"
#include "provider_registry.h"

namespace mailrelay {
namespace {

using nlohmann::json;

json address_list(const std::vector<Address>& list) {
  json out = json::array();
  for (const auto& a : list) out.push_back(format_address(a));  // "Name <email>", quoted as needed
  return out;
}

}  // namespace

ElasticEmailProvider::ElasticEmailProvider(std::string base_url, std::string api_key)
    : url_(api_url(std::move(base_url), "/v4/emails/transactional")), api_key_(std::move(api_key)) {}

HttpRequest ElasticEmailProvider::build_request(const Email& email, std::string_view request_id) const {
  json recipients{{"To", address_list(email.to)}};
  if (!email.cc.empty()) recipients["CC"] = address_list(email.cc);
  if (!email.bcc.empty()) recipients["BCC"] = address_list(email.bcc);

  // BodyContentType: HTML, PlainText, AMP, CSS.
  json body = json::array();
  if (!email.text.empty()) body.push_back({{"ContentType", "PlainText"}, {"Content", email.text}, {"Charset", "utf-8"}});
  if (!email.html.empty()) body.push_back({{"ContentType", "HTML"}, {"Content", email.html}, {"Charset", "utf-8"}});
  json content{{"Body", std::move(body)}, {"From", format_address(email.from)}, {"Subject", email.subject}};
  if (email.reply_to) content["ReplyTo"] = format_address(*email.reply_to);
  // v4 has no metadata field: metadata travels as X-Mailrelay-Metadata-<key> headers, as in the
  // outbox's files (README, Providers). Custom headers go as given.
  json headers = json::object();
  for (const auto& [name, value] : email.headers) headers[name] = value;
  for (const auto& [key, value] : email.metadata) headers["X-Mailrelay-Metadata-" + key] = value;
  if (!headers.empty()) content["Headers"] = std::move(headers);
  if (!email.attachments.empty()) {
    json attachments = json::array();
    for (const auto& a : email.attachments) {
      attachments.push_back({{"BinaryContent", base64_encode(a.content)}, {"Name", a.filename}, {"ContentType", a.content_type}});
    }
    content["Attachments"] = std::move(attachments);
  }
  // "Postback header" (EmailContent.postback): Elastic Email's closest documented equivalent of a
  // value handed back with the message's notifications; it carries the request id (README "Delivery events and suppressions").
  content["Postback"] = std::string(request_id);

  json payload{{"Recipients", std::move(recipients)}, {"Content", std::move(content)}};
  // A channel ("Name of selected channel", Options.channel_name) groups a message's statistics:
  // the one tag the limits allow.
  if (!email.tags.empty()) payload["Options"] = {{"ChannelName", email.tags.front()}};

  HttpRequest request;
  request.url = url_;
  request.headers = {{"Accept", "application/json"}, {"X-ElasticEmail-ApiKey", api_key_}};
  request.content_type = "application/json";
  request.body = payload.dump();
  return request;
}

std::string ElasticEmailProvider::message_id(const HttpResponse& response) const {
  // 200 EmailSend {"TransactionID": "...", "MessageID": "..."}
  json body = json::parse(response.body, nullptr, false);
  for (const char* key : {"MessageID", "TransactionID"}) {
    if (body.is_object() && body.contains(key) && body[key].is_string()) return body[key].get<std::string>();
  }
  return {};
}

std::string ElasticEmailProvider::error_message(const HttpResponse& response) const {
  // The v4 document does not describe its error bodies; a JSON "Error" or "message" is taken when
  // present, else the text as it came (one line, shortened).
  json body = json::parse(response.body, nullptr, false);
  for (const char* key : {"Error", "error", "Message", "message"}) {
    if (body.is_object() && body.contains(key) && body[key].is_string()) return one_line(body[key].get<std::string>());
  }
  return one_line(response.body);
}

AttemptOutcome ElasticEmailProvider::classify(const HttpResponse& response) const {
  // The v4 document gives its errors no codes; key and account failures come as a 400 whose
  // "Error" names them (e.g. {"Error":"APIKey Expired"}). They are the account's, not the
  // message's: `error`, counted toward the circuit (README "Provider health and the retry budget").
  if (response.status == 400) {
    const std::string text = ascii_lower(error_message(response));
    for (const char* word : {"apikey", "api key", "account", "access denied", "not allowed"}) {
      if (text.find(word) != std::string::npos) return AttemptOutcome::kError;
    }
  }
  return classify_http_status(response.status);
}

MessageLimits ElasticEmailProvider::limits() const {
  const std::string sdk = "elasticemail: ElasticEmail/elasticemail-python docs/";
  MessageLimits limits;
  limits.tags = Limit{1, {sdk + "Options.md (one ChannelName carries the tag)"}};
  limits.inline_attachments = Limit{0, {sdk + "MessageAttachment.md (no content id: no inline images)"}};
  return limits;
}

const ProviderDescriptor& elasticemail_descriptor() {
  static const ProviderDescriptor kDescriptor{
      "elasticemail",
      {{"base-url", "https://api.elasticemail.com", "Elastic Email API base URL"}},
      {{"api-key", "API key", "ELASTICEMAIL_API_KEY", "elasticemail_api_key", true}},
      nullptr,
      [](const ProviderConfig& c, HttpTransport& transport, Clock&) -> Result<std::unique_ptr<EmailProvider>> {
        return make_http_provider(c.name,
                                  std::make_unique<ElasticEmailProvider>(c.option("base-url"), c.secret("api-key")),
                                  transport);
      },
      std::nullopt};
  return kDescriptor;
}

}  // namespace mailrelay
