// Wire format: Amazon SES API v2 SendEmail (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html):
// Content.Raw.Data is the message the outbox renders, base64; Destination, FromEmailAddress,
// EmailTags (API_MessageTag). Errors (SendEmail "Errors"): AccountSuspendedException,
// BadRequestException, LimitExceededException, MailFromDomainNotVerifiedException,
// MessageRejected, NotFoundException, SendingPausedException, TooManyRequestsException, named in
// the X-Amzn-ErrorType header (restJson1), the text in the body's "message".
#include "ses_provider.h"

#include <cstring>

#include <nlohmann/json.hpp>

#include "base64.h"
#include "mime.h"
#include "provider_registry.h"

namespace mailrelay {
namespace {

using nlohmann::json;

json addresses(const std::vector<Address>& list) {
  json out = json::array();
  for (const auto& a : list) out.push_back(a.email);
  return out;
}

// "MessageRejected:http://internal.amazon.com/..." in the header, or "...#MessageRejected" as the
// body's "__type"; "" when neither says.
std::string error_type(const HttpResponse& response) {
  std::string type = response.header("x-amzn-errortype");
  if (type.empty()) {
    json body = json::parse(response.body, nullptr, false);
    if (body.is_object() && body.contains("__type") && body["__type"].is_string()) type = body["__type"].get<std::string>();
    if (auto hash = type.rfind('#'); hash != std::string::npos) type = type.substr(hash + 1);
  }
  return type.substr(0, type.find(':'));
}

}  // namespace

std::string ses_tag_value(std::string_view request_id) {
  std::string out;
  for (char c : request_id) {
    if (c == '_') out += "_5F";
    else if (c == '.') out += "_2E";
    else if (c == ':') out += "_3A";
    else out += c;
  }
  return out;
}

SesProvider::SesProvider(std::string base_url, std::string region, AwsCredentials credentials, Clock& clock)
    : region_(std::move(region)), credentials_(std::move(credentials)), clock_(clock) {
  if (base_url.empty()) base_url = "https://email." + region_ + ".amazonaws.com";
  url_ = api_url(base_url, "/v2/email/outbound-emails");
  const std::size_t scheme = url_.find("://") + 3;
  const std::size_t slash = url_.find('/', scheme);
  host_ = url_.substr(scheme, slash - scheme);
  path_ = url_.substr(slash);
  // curl leaves a default port out of Host, so the signature must too.
  for (const char* port : {":443", ":80"}) {
    if (host_.size() > 4 && host_.compare(host_.size() - std::strlen(port), std::strlen(port), port) == 0) {
      host_.resize(host_.size() - std::strlen(port));
    }
  }
}

HttpRequest SesProvider::build_request(const Email& email, std::string_view request_id) const {
  const auto now = clock_.wall_now();
  // The outbox's MIME, so attachments, inline images and headers carry over; SES sets Message-ID,
  // and a raw message must not show its Bcc (the envelope in Destination carries it).
  const std::string mime = render_eml(email, "", now, request_id, /*bcc_header=*/false);
  json destination{{"ToAddresses", addresses(email.to)}};
  if (!email.cc.empty()) destination["CcAddresses"] = addresses(email.cc);
  if (!email.bcc.empty()) destination["BccAddresses"] = addresses(email.bcc);
  json payload{{"FromEmailAddress", email.from.email},
               {"Destination", std::move(destination)},
               {"Content", {{"Raw", {{"Data", base64_encode(mime)}}}}},
               // Message tags come back in SES's sending events (README "Delivery events and suppressions").
               {"EmailTags", json::array({{{"Name", kRequestIdKey}, {"Value", ses_tag_value(request_id)}}})}};

  HttpRequest request;
  request.url = url_;
  request.content_type = "application/json";
  request.body = payload.dump();
  request.headers = sigv4_sign({"POST", host_, path_, {{"Content-Type", request.content_type}}, request.body}, region_,
                               "ses", credentials_, now);
  return request;
}

std::string SesProvider::message_id(const HttpResponse& response) const {
  // 200 {"MessageId": "..."}
  json body = json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("MessageId") && body["MessageId"].is_string()) return body["MessageId"].get<std::string>();
  return {};
}

std::string SesProvider::error_message(const HttpResponse& response) const {
  json body = json::parse(response.body, nullptr, false);
  std::string text;
  for (const char* key : {"message", "Message"}) {
    if (text.empty() && body.is_object() && body.contains(key) && body[key].is_string()) text = body[key].get<std::string>();
  }
  if (text.empty()) text = response.body;
  const std::string type = error_type(response);
  return one_line(type.empty() ? text : type + ": " + text);
}

AttemptOutcome SesProvider::classify(const HttpResponse& response) const {
  const std::string type = error_type(response);
  // This message: another provider may take it.
  if (type == "MessageRejected" || type == "BadRequestException") return AttemptOutcome::kRejected;
  // The account, its sending or its domain cannot send, whatever the message (README "Provider health and the retry budget").
  if (type == "AccountSuspendedException" || type == "SendingPausedException" ||
      type == "MailFromDomainNotVerifiedException" || type == "NotFoundException" || throttled(response)) {
    return AttemptOutcome::kError;
  }
  return classify_http_status(response.status);
}

bool SesProvider::throttled(const HttpResponse& response) const {
  // ThrottlingException is AWS's common error for every action, a 400 ("Maximum sending rate
  // exceeded." / "Daily message quota exceeded.",
  // https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html).
  const std::string type = error_type(response);
  return response.status == 429 || type == "TooManyRequestsException" || type == "LimitExceededException" ||
         type == "ThrottlingException";
}

std::optional<std::chrono::milliseconds> SesProvider::throttled_for(const HttpResponse& response,
                                                                   std::chrono::system_clock::time_point /*now*/) const {
  // The same page: after a throttle "wait for an interval of up to 10 minutes"; a spent daily
  // quota will not come back within the park's 5-minute cap, so it is parked for the cap. A rate
  // throttle names no time (the default one-second park).
  if (throttled(response) && response.body.find("Daily message quota exceeded") != std::string::npos) {
    return std::chrono::minutes(5);
  }
  return std::nullopt;
}

MessageLimits SesProvider::limits() const {
  MessageLimits limits;
  limits.recipients = Limit{50, {"ses: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html "
                                 "(at most 50 recipients, To, CC and BCC together)"}};
  return limits;
}

const ProviderDescriptor& ses_descriptor() {
  static const ProviderDescriptor kDescriptor{
      "ses",
      {{"region", "", "AWS region of the SES endpoint, e.g. eu-west-1 (required)"},
       {"base-url", "", "SES API base URL (default https://email.<region>.amazonaws.com)"}},
      {{"access-key-id", "access key id", "AWS_ACCESS_KEY_ID", "aws_access_key_id", true},
       {"secret-access-key", "secret access key", "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", true},
       {"session-token", "session token", "AWS_SESSION_TOKEN", "aws_session_token", false}},
      [](const ProviderConfig& c) -> std::optional<std::string> {
        const std::string& region = c.option("region");
        if (region.empty()) return std::string("provider 'ses' is listed in --providers but --ses-region is not set");
        if (region.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos) {
          return "--ses-region is not a region name: " + region;
        }
        return std::nullopt;
      },
      [](const ProviderConfig& c, HttpTransport& transport, Clock& clock) -> Result<std::unique_ptr<EmailProvider>> {
        AwsCredentials credentials{c.secret("access-key-id"), c.secret("secret-access-key"), c.secret("session-token")};
        return make_http_provider(c.name,
                                  std::make_unique<SesProvider>(c.option("base-url"), c.option("region"), credentials, clock),
                                  transport);
      },
      std::nullopt};
  return kDescriptor;
}

}  // namespace mailrelay
