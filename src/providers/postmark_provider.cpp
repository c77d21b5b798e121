// Wire format: https://postmarkapp.com/developer/api/email-api and
// https://postmarkapp.com/developer/user-guide/sending-email/sending-with-api; error codes:
// https://postmarkapp.com/developer/api/overview#error-codes.
#include "postmark_provider.h"

#include <nlohmann/json.hpp>

#include "base64.h"
#include "mime.h"
#include "provider_registry.h"

namespace mailrelay {
namespace {

using nlohmann::json;

// To, Cc and Bcc are one string each, addresses separated by commas; a display name with a comma
// is quoted ("Names or titles with punctuation ... need to be quoted", support article 1180),
// which format_address does.
std::string address_list(const std::vector<Address>& list) {
  std::string out;
  for (const auto& a : list) out += (out.empty() ? "" : ", ") + format_address(a);
  return out;
}

// "You can do this by passing POSTMARK_API_TEST as your server API token" (sending-with-api,
// Testing): the message is validated and not delivered.
constexpr const char* kTestToken = "POSTMARK_API_TEST";

int error_code(const HttpResponse& response) {
  json body = json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("ErrorCode") && body["ErrorCode"].is_number_integer()) {
    return body["ErrorCode"].get<int>();
  }
  return -1;
}

}  // namespace

PostmarkProvider::PostmarkProvider(std::string base_url, std::string server_token, std::string message_stream)
    : url_(api_url(std::move(base_url), "/email")),
      server_token_(std::move(server_token)),
      message_stream_(std::move(message_stream)) {}

HttpRequest PostmarkProvider::build_request(const Email& email, std::string_view request_id) const {
  json payload{{"From", format_address(email.from)}, {"To", address_list(email.to)}};
  if (!email.cc.empty()) payload["Cc"] = address_list(email.cc);
  if (!email.bcc.empty()) payload["Bcc"] = address_list(email.bcc);
  payload["Subject"] = email.subject;
  if (!email.tags.empty()) payload["Tag"] = email.tags.front();  // one tag: the limits allow no more
  if (!email.html.empty()) payload["HtmlBody"] = email.html;
  if (!email.text.empty()) payload["TextBody"] = email.text;
  if (email.reply_to) payload["ReplyTo"] = format_address(*email.reply_to);
  if (!email.headers.empty()) {
    json headers = json::array();
    for (const auto& [name, value] : email.headers) headers.push_back({{"Name", name}, {"Value", value}});
    payload["Headers"] = std::move(headers);
  }
  // Metadata comes back in every webhook: the request id joins a bounce to its request (README "Delivery events and suppressions").
  json metadata = json::object();
  for (const auto& [key, value] : email.metadata) metadata[key] = value;
  metadata[kRequestIdKey] = std::string(request_id);
  if (!email.client.empty()) metadata[kClientKey] = email.client;
  payload["Metadata"] = std::move(metadata);
  if (!email.attachments.empty()) {
    json attachments = json::array();
    for (const auto& a : email.attachments) {
      json item{{"Name", a.filename}, {"Content", base64_encode(a.content)}, {"ContentType", a.content_type}};
      if (a.is_inline) item["ContentID"] = "cid:" + a.content_id;  // the html's cid:<content_id>
      attachments.push_back(std::move(item));
    }
    payload["Attachments"] = std::move(attachments);
  }
  payload["MessageStream"] = message_stream_;

  HttpRequest request;
  request.url = url_;
  request.headers = {{"Accept", "application/json"},
                     {"X-Postmark-Server-Token", email.sandbox ? std::string(kTestToken) : server_token_}};
  request.content_type = "application/json";
  request.body = payload.dump();
  return request;
}

std::string PostmarkProvider::message_id(const HttpResponse& response) const {
  // 200 {"To":"...","SubmittedAt":"...","MessageID":"<uuid>","ErrorCode":0,"Message":"OK"}
  json body = json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("MessageID") && body["MessageID"].is_string()) {
    return body["MessageID"].get<std::string>();
  }
  return {};
}

std::string PostmarkProvider::error_message(const HttpResponse& response) const {
  // {"ErrorCode": 300, "Message": "..."}
  json body = json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("Message") && body["Message"].is_string()) {
    std::string code = body.contains("ErrorCode") ? " (ErrorCode " + body["ErrorCode"].dump() + ")" : "";
    return one_line(body["Message"].get<std::string>() + code);
  }
  return one_line(response.body);
}

AttemptOutcome PostmarkProvider::classify(const HttpResponse& response) const {
  const int code = error_code(response);
  // "Success is 200 with ErrorCode 0" (README "Providers"): anything else on a 200 did not send.
  if (response.status == 200) return code <= 0 ? AttemptOutcome::kSent : AttemptOutcome::kError;
  if (response.status != 422) return classify_http_status(response.status);
  switch (code) {
    // The token, the sender signature or the account cannot send, whatever the message:
    // errors that count toward the circuit (README "Provider health and the retry budget").
    case 10:   // Bad or missing API token
    case 400:  // Sender signature not found
    case 401:  // Sender signature not confirmed
    case 405:  // Not allowed to send (out of credits)
    case 412:  // Account is pending
    case 413:  // Account may not send
    case 429:  // Rate limit exceeded
    case 100:  // Maintenance
      return AttemptOutcome::kError;
    default:  // 300 invalid email request, 406 inactive recipient, 411 forbidden attachment, ...
      return AttemptOutcome::kRejected;
  }
}

bool PostmarkProvider::throttled(const HttpResponse& response) const {
  // HTTP 429, or ErrorCode 429 "Rate limit exceeded" (error codes list).
  return response.status == 429 || (response.status == 422 && error_code(response) == 429);
}

std::optional<std::chrono::milliseconds> PostmarkProvider::throttled_for(
    const HttpResponse& response, std::chrono::system_clock::time_point /*now*/) const {
  if (!throttled(response)) return std::nullopt;  // a 503 without Retry-After: the usual backoff
  return std::chrono::milliseconds(1000);         // Postmark does not say when: park it a second
}

MessageLimits PostmarkProvider::limits() const {
  MessageLimits limits;
  limits.recipients = Limit{50, {"postmark: https://postmarkapp.com/support/article/1180-what-does-errorcode-300-mean "
                                 "(50 recipients per message, To, Cc and Bcc together)"}};
  limits.tags = Limit{1, {"postmark: https://postmarkapp.com/support/article/1125-custom-metadata-faq "
                          "(only one tag can be applied to each message)"}};
  limits.tag_length = Limit{1000, {"postmark: https://postmarkapp.com/developer/api/email-api (Tag: max characters 1000)"}};
  return limits;
}

const ProviderDescriptor& postmark_descriptor() {
  static const ProviderDescriptor kDescriptor{
      "postmark",
      {{"base-url", "https://api.postmarkapp.com", "Postmark API base URL"},
       {"message-stream", "outbound", "Postmark message stream (MessageStream) for transactional mail"}},
      {{"api-key", "server token", "POSTMARK_SERVER_TOKEN", "postmark_server_token", true}},
      [](const ProviderConfig& c) -> std::optional<std::string> {
        if (c.option("message-stream").empty()) return std::string("--postmark-message-stream must not be empty");
        return std::nullopt;
      },
      [](const ProviderConfig& c, HttpTransport& transport, Clock&) -> Result<std::unique_ptr<EmailProvider>> {
        return make_http_provider(c.name,
                                  std::make_unique<PostmarkProvider>(c.option("base-url"), c.secret("api-key"), c.option("message-stream")),
                                  transport);
      },
      postmark_webhook()};
  return kDescriptor;
}

}  // namespace mailrelay
