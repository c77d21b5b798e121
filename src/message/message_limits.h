// MessageLimits: what a message may hold so that every configured provider takes it whole. Each
// provider states its own (with the document each comes from); the relay validates against the
// smallest of each (README "Providers"), computed once when the providers are built. Plain values.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mailrelay {

struct Email;

struct Limit {
  std::size_t max = 0;
  std::vector<std::string> sources;  // "sendgrid: <document>", one per provider that sets it
};

struct MessageLimits {
  std::optional<Limit> recipients;      // to + cc + bcc
  std::optional<Limit> tags;            // how many
  std::optional<Limit> tag_length;      // bytes each
  std::optional<Limit> metadata_bytes;  // metadata_size() of the caller's metadata
  std::optional<Limit> options_bytes;   // options_size(): headers, reply_to, tags and metadata together
  std::optional<Limit> attachment_min_bytes;  // 1: no empty attachment
  std::optional<Limit> inline_attachments;    // how many "disposition": "inline" (0: none)

  // The relay's own, whatever the providers: 1000 recipients (the size of one audit line and one
  // provider call stays bounded).
  static MessageLimits relay();
  // The smaller of each; a limit only one side has is kept.
  MessageLimits& tighten(const MessageLimits& other);
  // {"recipients": 1000, ...} and, under "sources", where each comes from.
  nlohmann::ordered_json to_json() const;
};

// Bytes the relay adds to every provider call's metadata: the request id stamp
// (`mailrelay_request_id`, README "Delivery events and suppressions") and the client's name
// (`mailrelay_client`: request ids are per client, SPEC §21), counted at their longest (a
// 128-character id, a 64-character name).
inline constexpr const char* kRequestIdKey = "mailrelay_request_id";
inline constexpr std::size_t kMaxRequestIdLength = 128;
inline constexpr const char* kClientKey = "mailrelay_client";
inline constexpr std::size_t kMaxClientNameLength = 64;

// Metadata counted as JSON with spaces: each entry's JSON-escaped key and value plus 8 bytes
// (four quotes, ": " and ", "), plus 2 for the braces. No provider's own rendering is larger.
std::size_t metadata_size(const std::vector<std::pair<std::string, std::string>>& metadata);
// The same count for the two stamps at their longest.
std::size_t request_id_stamp_size();
// Mailgun's send options (o:, h:, v:, t: fields): each field's name, prefix included, and value.
// Counts the caller's headers, reply_to, tags and metadata, and (at their longest) the fields the
// relay adds: v:mailrelay_request_id and o:testmode.
std::size_t options_size(const Email& email);

}  // namespace mailrelay
