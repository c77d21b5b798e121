#include "email.h"

#include <algorithm>
#include <cctype>
#include <set>

#include <nlohmann/json.hpp>

#include "ascii.h"
#include "base64.h"
#include "json_depth.h"

namespace mailrelay {
namespace {

using nlohmann::json;

Error invalid(std::string field, std::string message) {
  return Error{"invalid_request", std::move(message), std::move(field)};
}


// Anything that ends up in a header must not be able to start a new header line: CR, LF and NUL
// are the injection vectors; the other C0 controls and DEL are refused along with them.
bool has_control_chars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    unsigned char u = static_cast<unsigned char>(c);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  });
}

bool is_atext(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-/=?^_`{|}~").find(c) != std::string_view::npos;
}

bool is_dot_atom(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '.') {
      if (s[i + 1] == '.') return false;
    } else if (!is_atext(s[i])) {
      return false;
    }
  }
  return true;
}

bool is_domain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// RFC 5322 field name: printable US-ASCII except colon.
bool is_field_name(std::string_view s) {
  if (s.empty() || s.size() > 76) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 33 && c <= 126 && c != ':'; });
}

// Headers the relay sets itself, or that a provider refuses to take from a caller.
bool is_reserved_header(std::string_view name) {
  static const std::set<std::string, std::less<>> kReserved = {
      "bcc", "cc", "content-disposition", "content-transfer-encoding", "content-type", "date", "dkim-signature", "from", "message-id", "mime-version", "received", "reply-to",
      "return-path", "sender", "subject", "to", "x-sg-eid", "x-sg-id"};
  return kReserved.count(ascii_lower(name)) > 0;
}

// Header families that a provider or an MTA acts on: a caller could otherwise pick another
// identity's sending authorisation or a configuration set, resend to hidden recipients, or
// forge the relay's own markers. Each provider's control headers, from its documents:
// - X-SES-*: https://docs.aws.amazon.com/ses/latest/dg/event-publishing-send-email.html
//   (X-SES-CONFIGURATION-SET, X-SES-MESSAGE-TAGS) and SendRawEmail's X-SES-SOURCE-ARN,
//   X-SES-FROM-ARN, X-SES-RETURN-PATH-ARN (sending authorisation).
// - X-Mailgun-*: https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/pass-sending-options
//   (X-Mailgun-Tag, -Drop-Message, -Track, -Sending-Ip, -Require-TLS, -Variables, ...).
// - X-PM-*: Postmark's SMTP headers (X-PM-Tag, X-PM-Metadata-*, X-PM-Message-Stream),
//   https://postmarkapp.com/developer/user-guide/send-email-with-smtp.
// - X-SMTPAPI: SendGrid's SMTP API header (per-message settings, recipients, categories).
// Content-* belong to the MIME the relay writes; Resent-* make an MTA resend.
bool is_reserved_prefix(std::string_view name) {
  static constexpr std::string_view kPrefixes[] = {"content-", "resent-", "x-ses-", "x-mailrelay-",
                                                   "x-smtpapi", "x-mailgun-", "x-pm-"};
  const std::string lowered = ascii_lower(name);
  return std::any_of(std::begin(kPrefixes), std::end(kPrefixes),
                     [&](std::string_view p) { return std::string_view(lowered).substr(0, p.size()) == p; });
}

bool is_mime_type(std::string_view s) {
  auto token = [](std::string_view t) {
    return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) ||
             std::string_view("!#$&^_.+-").find(c) != std::string_view::npos;
    });
  };
  std::size_t slash = s.find('/');
  return s.size() <= 127 && slash != std::string_view::npos && token(s.substr(0, slash)) &&
         token(s.substr(slash + 1));
}

bool is_metadata_key(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

const char* type_name(const json& v) { return v.type_name(); }

Result<std::string> header_text(const json& v, const std::string& field, bool required) {
  if (!v.is_string()) return invalid(field, "must be a string, got " + std::string(type_name(v)));
  const auto& s = v.get_ref<const std::string&>();
  if (required && s.empty()) return invalid(field, "must not be empty");
  if (has_control_chars(s)) return invalid(field, "must not contain CR, LF, NUL or other control characters");
  if (s.size() > kMaxHeaderValue) {
    return invalid(field, "is longer than " + std::to_string(kMaxHeaderValue) + " bytes");
  }
  return std::string(s);
}

Result<Address> address_from_json(const json& v, const std::string& field) {
  if (v.is_string()) return parse_address(v.get_ref<const std::string&>(), field);
  if (!v.is_object()) {
    return invalid(field, "must be an address string or an {\"email\", \"name\"} object, got " +
                              std::string(type_name(v)));
  }
  for (const auto& item : v.items()) {
    if (item.key() != "email" && item.key() != "name") {
      return invalid(field + "." + item.key(), "unknown field; an address has \"email\" and \"name\"");
    }
  }
  if (!v.contains("email")) return invalid(field + ".email", "is required");
  const json& email = v.at("email");
  if (!email.is_string()) return invalid(field + ".email", "must be a string");
  Address address;
  address.email = email.get<std::string>();
  if (!is_valid_addr_spec(address.email)) {
    return invalid(field + ".email", "is not a valid email address");
  }
  if (v.contains("name")) {
    auto name = header_text(v.at("name"), field + ".name", false);
    if (!name) return name.error();
    address.name = std::move(name).value();
  }
  return address;
}

// "disposition" and "content_id" of one attachment: the content id of an inline one, "" otherwise.
// Content ids are 1 to 128 characters a cid: URL can hold without escaping (RFC 2392) and that
// Mailgun can use as the inline file's name (its cid), unique within the message.
Result<std::string> inline_fields(const json& a, const std::string& field, std::set<std::string>& seen) {
  std::string disposition = "attachment";
  if (a.contains("disposition")) {
    const json& d = a.at("disposition");
    if (!d.is_string() || (d != "attachment" && d != "inline")) {
      return invalid(field + ".disposition", "must be \"attachment\" or \"inline\"");
    }
    disposition = d.get<std::string>();
  }
  const bool has_id = a.contains("content_id");
  if (disposition == "attachment") {
    if (has_id) return invalid(field + ".content_id", "is only for \"disposition\": \"inline\"");
    return std::string();
  }
  if (!has_id) return invalid(field + ".content_id", "is required for an inline attachment (the html refers to cid:<content_id>)");
  const json& id = a.at("content_id");
  auto cid_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("._-@+").find(c) != std::string_view::npos;
  };
  if (!id.is_string() || id.get_ref<const std::string&>().empty() || id.get_ref<const std::string&>().size() > kMaxContentId ||
      !std::all_of(id.get_ref<const std::string&>().begin(), id.get_ref<const std::string&>().end(), cid_char)) {
    return invalid(field + ".content_id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ - @ +");
  }
  if (!seen.insert(id.get<std::string>()).second) return invalid(field + ".content_id", "is used by another attachment");
  return id.get<std::string>();
}

}  // namespace

bool is_valid_addr_spec(std::string_view email) {
  if (email.size() > kMaxAddress) return false;
  std::size_t at = email.rfind('@');
  if (at == std::string_view::npos || at == 0 || at > kMaxLocalPart) return false;
  return is_dot_atom(email.substr(0, at)) && is_domain(email.substr(at + 1));
}

Result<Address> parse_address(std::string_view text, const std::string& field) {
  if (has_control_chars(text)) {
    return invalid(field, "must not contain CR, LF, NUL or other control characters");
  }
  std::string_view s = trim_blanks(text);
  Address address;
  if (!s.empty() && s.back() == '>') {
    std::size_t lt = s.rfind('<');
    if (lt == std::string_view::npos) return invalid(field, "has '>' without '<'");
    address.email = std::string(s.substr(lt + 1, s.size() - lt - 2));
    std::string_view name = trim_blanks(s.substr(0, lt));
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
      name = name.substr(1, name.size() - 2);
      for (std::size_t i = 0; i < name.size(); ++i) {
        if (name[i] == '\\' && i + 1 < name.size()) ++i;
        address.name += name[i];
      }
    } else {
      address.name = std::string(name);
    }
    if (address.name.size() > kMaxHeaderValue) return invalid(field, "display name is too long");
  } else {
    address.email = std::string(s);
  }
  if (address.email.empty()) return invalid(field, "is empty; expected \"a@example.com\" or \"Name <a@example.com>\"");
  if (!is_valid_addr_spec(address.email)) {
    // Internationalised addresses (RFC 6531) need SMTPUTF8 end to end, which the relay does not
    // promise; a domain in Unicode can be given in its ASCII (punycode) form.
    if (std::any_of(address.email.begin(), address.email.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
      return invalid(field, "is not a valid email address: only ASCII addresses are supported (give a domain as xn--...)");
    }
    return invalid(field, "is not a valid email address (local@domain: at most 64 characters before the @, 254 in all)");
  }
  return address;
}

namespace {

using Problem = std::optional<Error>;  // nullopt: that part is fine

bool present(const json& doc, const char* key) { return doc.contains(key); }  // null: refused by parse_document

// The body as a JSON object of known fields.
Result<json> parse_document(std::string_view body) {
  if (json_nesting_depth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return invalid("", "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  json doc;
  try {
    doc = json::parse(body);
  } catch (const json::exception& e) {
    // parse_error names the byte offset and the reason (including ill-formed UTF-8);
    // out_of_range is a number too large for a double (1e999), found by the fuzzer.
    return invalid("", std::string("body is not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) return invalid("", "body must be a JSON object");
  static const std::set<std::string, std::less<>> kKnown = {
      "from", "to", "cc", "bcc", "reply_to", "subject", "text", "html",
      "headers", "attachments", "tags", "metadata", "sandbox"};
  for (const auto& item : doc.items()) {
    if (!kKnown.count(item.key())) return invalid(item.key(), "unknown field");
    // No member is nullable (docs/openapi.yaml): null is refused, not read as "absent" (SPEC §20).
    if (item.value().is_null()) return invalid(item.key(), "must not be null: leave it out instead");
  }
  return doc;
}

Problem parse_senders(const json& doc, Email& email) {
  if (!present(doc, "from")) return invalid("from", "is required");
  auto from = address_from_json(doc.at("from"), "from");
  if (!from) return from.error();
  email.from = std::move(from).value();
  if (present(doc, "reply_to")) {
    auto reply_to = address_from_json(doc.at("reply_to"), "reply_to");
    if (!reply_to) return reply_to.error();
    email.reply_to = std::move(reply_to).value();
  }
  return std::nullopt;
}

// Recipients. SendGrid rejects a message whose personalizations name one address twice (400,
// "Each unique email address in the personalizations array should only be included once"), so
// duplicates across to/cc/bcc are dropped here, first occurrence wins, compared case-insensitively.
Problem parse_recipients(const json& doc, const MessageLimits& limits, Email& email) {
  const std::size_t max_recipients = limits.recipients ? limits.recipients->max : kMaxRecipients;
  std::size_t raw_count = 0;
  std::set<std::string> seen;
  for (const char* list : {"to", "cc", "bcc"}) {
    if (!present(doc, list)) continue;
    const json& arr = doc.at(list);
    if (!arr.is_array()) return invalid(list, "must be an array of addresses");
    raw_count += arr.size();
    if (raw_count > max_recipients) {
      return invalid(list, "more than " + std::to_string(max_recipients) + " recipients (to + cc + bcc)");
    }
    auto& out = std::string_view(list) == "to" ? email.to : std::string_view(list) == "cc" ? email.cc : email.bcc;
    for (std::size_t i = 0; i < arr.size(); ++i) {
      auto address = address_from_json(arr[i], std::string(list) + "[" + std::to_string(i) + "]");
      if (!address) return address.error();
      if (seen.insert(ascii_lower(address.value().email)).second) out.push_back(std::move(address).value());
    }
  }
  // SendGrid ("You must include at least one to object within the personalizations array") and
  // Mailgun ("to" is a required field) both refuse a message without a To recipient, so a cc- or
  // bcc-only message is turned away here instead of failing at every provider.
  if (email.to.empty()) {
    return invalid("to", "at least one \"to\" recipient is required (SendGrid and Mailgun refuse a message without one)");
  }
  return std::nullopt;
}

Problem parse_content(const json& doc, Email& email) {
  if (!present(doc, "subject")) return invalid("subject", "is required");
  auto subject = header_text(doc.at("subject"), "subject", true);
  if (!subject) return subject.error();
  email.subject = std::move(subject).value();
  for (const char* part : {"text", "html"}) {
    if (!present(doc, part)) continue;
    if (!doc.at(part).is_string()) return invalid(part, "must be a string");
    (std::string_view(part) == "text" ? email.text : email.html) = doc.at(part).get<std::string>();
  }
  if (email.text.empty() && email.html.empty()) {
    return invalid("text", "at least one of \"text\" and \"html\" is required and must not be empty");
  }
  return std::nullopt;
}

Problem parse_headers(const json& doc, Email& email) {
  if (!present(doc, "headers")) return std::nullopt;
  const json& headers = doc.at("headers");
  if (!headers.is_object()) return invalid("headers", "must be an object of name: value strings");
  for (const auto& item : headers.items()) {
    std::string field = "headers." + item.key();
    if (!is_field_name(item.key())) {
      return invalid(field, "is not a valid header name (printable ASCII without ':' or spaces)");
    }
    if (is_reserved_header(item.key())) {
      return invalid(field, "is set by the relay and cannot be overridden; use the matching field");
    }
    if (is_reserved_prefix(item.key())) {
      return invalid(field, "is reserved: providers or mail servers act on headers named so (Content-*, Resent-*, "
                            "X-SES-*, X-Mailgun-*, X-PM-*, X-SMTPAPI, X-Mailrelay-*)");
    }
    auto value = header_text(item.value(), field, false);
    if (!value) return value.error();
    email.headers.emplace_back(item.key(), std::move(value).value());
  }
  return std::nullopt;
}

// attachments[i]; `content_ids` collects the inline parts' ids across the message.
Result<Attachment> parse_attachment(const json& a, const std::string& field, const MessageLimits& limits,
                                    std::set<std::string>& content_ids) {
  if (!a.is_object()) return invalid(field, "must be an object");
  static const std::set<std::string, std::less<>> kAttachmentFields = {
      "filename", "content_type", "content", "disposition", "content_id"};
  for (const auto& item : a.items()) {
    if (!kAttachmentFields.count(item.key())) return invalid(field + "." + item.key(), "unknown field");
  }
  Attachment attachment;
  if (!a.contains("filename")) return invalid(field + ".filename", "is required");
  auto filename = header_text(a.at("filename"), field + ".filename", true);
  if (!filename) return filename.error();
  attachment.filename = std::move(filename).value();
  attachment.content_type = "application/octet-stream";
  if (a.contains("content_type")) {
    const json& type = a.at("content_type");
    if (!type.is_string() || !is_mime_type(type.get_ref<const std::string&>())) {
      return invalid(field + ".content_type", "must be a MIME type such as \"application/pdf\"");
    }
    attachment.content_type = type.get<std::string>();
  }
  if (!a.contains("content") || !a.at("content").is_string()) {
    return invalid(field + ".content", "is required: the file's bytes in standard base64");
  }
  auto bytes = base64_decode(a.at("content").get_ref<const std::string&>());
  if (!bytes) return invalid(field + ".content", "is not valid base64 (standard alphabet, padded)");
  attachment.content = std::move(*bytes);
  if (limits.attachment_min_bytes && attachment.content.size() < limits.attachment_min_bytes->max) {
    return invalid(field + ".content", "must not be empty (SendGrid refuses an empty attachment)");
  }
  auto inline_part = inline_fields(a, field, content_ids);
  if (!inline_part) return inline_part.error();
  attachment.content_id = std::move(inline_part).value();
  attachment.is_inline = !attachment.content_id.empty();
  if (attachment.is_inline && limits.inline_attachments && content_ids.size() > limits.inline_attachments->max) {
    return invalid(field + ".disposition", "at most " + std::to_string(limits.inline_attachments->max) +
                                               " inline attachments with the providers configured (see GET /v1/limits)");
  }
  return attachment;
}

Problem parse_attachments(const json& doc, const MessageLimits& limits, Email& email) {
  if (!present(doc, "attachments")) return std::nullopt;
  const json& list = doc.at("attachments");
  if (!list.is_array()) return invalid("attachments", "must be an array");
  std::set<std::string> content_ids;
  for (std::size_t i = 0; i < list.size(); ++i) {
    auto attachment = parse_attachment(list[i], "attachments[" + std::to_string(i) + "]", limits, content_ids);
    if (!attachment) return attachment.error();
    email.attachments.push_back(std::move(attachment).value());
  }
  return std::nullopt;
}

Problem parse_tags(const json& doc, const MessageLimits& limits, Email& email) {
  if (!present(doc, "tags")) return std::nullopt;
  const json& tags = doc.at("tags");
  if (!tags.is_array()) return invalid("tags", "must be an array of strings");
  const std::size_t max_length = limits.tag_length ? limits.tag_length->max : kMaxHeaderValue;
  for (std::size_t i = 0; i < tags.size(); ++i) {
    std::string field = "tags[" + std::to_string(i) + "]";
    if (!tags[i].is_string()) return invalid(field, "must be a string");
    const auto& tag = tags[i].get_ref<const std::string&>();
    bool printable = std::all_of(tag.begin(), tag.end(), [](char c) { return c >= 32 && c <= 126; });
    if (tag.empty() || tag.size() > max_length || !printable) {
      return invalid(field, "must be 1 to " + std::to_string(max_length) + " printable ASCII characters");
    }
    // A tag given twice is one tag: SendGrid refuses repeated categories (uniqueItems).
    if (std::find(email.tags.begin(), email.tags.end(), tag) == email.tags.end()) email.tags.push_back(tag);
  }
  if (limits.tags && email.tags.size() > limits.tags->max) {
    return invalid("tags", "at most " + std::to_string(limits.tags->max) + " distinct tags (see GET /v1/limits)");
  }
  return std::nullopt;
}

Problem parse_metadata(const json& doc, const MessageLimits& limits, Email& email) {
  if (!present(doc, "metadata")) return std::nullopt;
  const json& metadata = doc.at("metadata");
  if (!metadata.is_object()) return invalid("metadata", "must be an object");
  for (const auto& item : metadata.items()) {
    std::string field = "metadata." + item.key();
    if (!is_metadata_key(item.key())) {
      return invalid(field, "key must be 1 to 64 characters of A-Z a-z 0-9 _ - .");
    }
    if (item.key() == kRequestIdKey || item.key() == kClientKey) {
      return invalid(field, "is set by the relay (request id and client, handed back in delivery events)");
    }
    const json& v = item.value();
    std::string value;
    if (v.is_string()) value = v.get<std::string>();
    else if (v.is_number() || v.is_boolean()) value = v.dump();
    else return invalid(field, "must be a string, number or boolean");
    // Mailgun carries v: variables in a message header, so the header rules apply.
    if (has_control_chars(value)) return invalid(field, "must not contain control characters");
    email.metadata.emplace_back(item.key(), std::move(value));
  }
  if (limits.metadata_bytes && metadata_size(email.metadata) + request_id_stamp_size() > limits.metadata_bytes->max) {
    return invalid("metadata", "is " + std::to_string(metadata_size(email.metadata)) + " bytes; at most " +
                                   std::to_string(limits.metadata_bytes->max - request_id_stamp_size()) +
                                   " (see GET /v1/limits and the README's Limits)");
  }
  return std::nullopt;
}

Problem check_options(const MessageLimits& limits, const Email& email) {
  if (const std::size_t options = limits.options_bytes ? options_size(email) : 0;
      limits.options_bytes && options > limits.options_bytes->max) {
    return invalid(email.metadata.empty() ? "headers" : "metadata",
                   "headers, reply_to, tags and metadata together are " + std::to_string(options) +
                       " bytes as Mailgun options; at most " + std::to_string(limits.options_bytes->max) +
                       " (see GET /v1/limits)");
  }
  return std::nullopt;
}

}  // namespace

// Each part in the order a client reads the document; the first problem is the answer.
Result<Email> parse_email(std::string_view body, const MessageLimits& limits) {
  auto doc = parse_document(body);
  if (!doc) return doc.error();
  const json& d = doc.value();
  Email email;
  Problem p;
  if ((p = parse_senders(d, email)) || (p = parse_recipients(d, limits, email)) || (p = parse_content(d, email)) ||
      (p = parse_headers(d, email)) || (p = parse_attachments(d, limits, email)) || (p = parse_tags(d, limits, email)) ||
      (p = parse_metadata(d, limits, email)) || (p = check_options(limits, email))) {
    return *p;
  }
  if (present(d, "sandbox")) {
    if (!d.at("sandbox").is_boolean()) return invalid("sandbox", "must be true or false");
    email.sandbox = d.at("sandbox").get<bool>();
  }
  return email;
}

}  // namespace mailrelay
