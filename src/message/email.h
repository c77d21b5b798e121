// Email: one validated message, and parse_email() that builds it from the POST /v1/send JSON body.
// Values are immutable once built; safe to share read-only across threads.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "message_limits.h"
#include "result.h"

namespace mailrelay {

struct Address {
  std::string email;  // addr-spec, validated (RFC 5321 lengths)
  std::string name;   // display name, may be empty; never contains CR, LF or NUL
};

struct Attachment {
  std::string filename;
  std::string content_type;  // type/subtype, defaults to application/octet-stream
  std::string content;       // decoded bytes
  bool is_inline = false;    // "disposition": "inline": shown in the html, which refers to cid:<content_id>
  std::string content_id;    // set exactly when is_inline; unique within the message
};

// The relay's own limits; the providers' are in MessageLimits (README "Limits").
inline constexpr std::size_t kMaxRecipients = 1000;     // one message, one bounded audit line
inline constexpr std::size_t kMaxLocalPart = 64;        // RFC 5321 4.5.3.1.1
inline constexpr std::size_t kMaxAddress = 254;         // RFC 5321 path limit minus the brackets
inline constexpr std::size_t kMaxHeaderValue = 998;     // RFC 5322 2.1.1 line length
inline constexpr std::size_t kMaxContentId = 128;       // a cid: reference, RFC 2392
inline constexpr int kMaxJsonDepth = 8;                 // our schema nests 3 deep

struct Email {
  Address from;
  std::vector<Address> to, cc, bcc;  // de-duplicated across all three, case-insensitively
  std::optional<Address> reply_to;
  std::string subject;
  std::string text;  // empty = no text part
  std::string html;  // empty = no html part
  std::vector<std::pair<std::string, std::string>> headers;   // custom headers, in request order
  std::vector<Attachment> attachments;
  std::vector<std::string> tags;  // distinct (SendGrid categories are uniqueItems)
  std::vector<std::pair<std::string, std::string>> metadata;  // values rendered as strings
  bool sandbox = false;  // "sandbox": true: each provider's test mode, nothing delivered
  // Not from the body: the sending client's name, stamped beside the request id where a provider
  // hands metadata back in its events ("" without a tokens file: no stamp).
  std::string client;

  std::size_t recipient_count() const { return to.size() + cc.size() + bcc.size(); }
};

// Parses and validates a request body against `limits` (the configured providers' together). On
// failure the Error has code "invalid_request", a message a developer can act on, and `field`
// naming the offending field ("to[1].email", "headers.X-A").
Result<Email> parse_email(std::string_view json_body, const MessageLimits& limits = MessageLimits::relay());

// Parses one address ("a@b" or "Name <a@b>") and validates it. `field` names it in errors.
Result<Address> parse_address(std::string_view text, const std::string& field);

// True when `email` is a syntactically valid addr-spec within RFC 5321 lengths (ASCII dot-atom
// local part, LDH domain labels).
bool is_valid_addr_spec(std::string_view email);

}  // namespace mailrelay
