#include "message_limits.h"

#include <cstring>

#include "email.h"
#include "mime.h"

namespace mailrelay {
namespace {

std::size_t json_string_size(const std::string& s) {
  return nlohmann::json(s).dump().size() - 2;  // escaped, without the quotes
}

void tighten_one(std::optional<Limit>& mine, const std::optional<Limit>& theirs) {
  if (!theirs) return;
  if (!mine || theirs->max < mine->max) {
    mine = theirs;
  } else if (theirs->max == mine->max) {
    mine->sources.insert(mine->sources.end(), theirs->sources.begin(), theirs->sources.end());
  }
}

}  // namespace

MessageLimits MessageLimits::relay() {
  MessageLimits limits;
  limits.recipients = Limit{kMaxRecipients, {"mailrelay: one message, one audit line"}};
  return limits;
}

MessageLimits& MessageLimits::tighten(const MessageLimits& other) {
  tighten_one(recipients, other.recipients);
  tighten_one(tags, other.tags);
  tighten_one(tag_length, other.tag_length);
  tighten_one(metadata_bytes, other.metadata_bytes);
  tighten_one(options_bytes, other.options_bytes);
  tighten_one(attachment_min_bytes, other.attachment_min_bytes);
  tighten_one(inline_attachments, other.inline_attachments);
  return *this;
}

nlohmann::ordered_json MessageLimits::to_json() const {
  nlohmann::ordered_json values = nlohmann::ordered_json::object();
  nlohmann::ordered_json sources = nlohmann::ordered_json::object();
  auto add = [&](const char* name, const std::optional<Limit>& limit) {
    values[name] = limit ? nlohmann::ordered_json(limit->max) : nlohmann::ordered_json(nullptr);
    if (limit) sources[name] = limit->sources;
  };
  add("recipients", recipients);
  add("tags", tags);
  add("tag_length", tag_length);
  add("metadata_bytes", metadata_bytes);
  add("options_bytes", options_bytes);
  add("attachment_min_bytes", attachment_min_bytes);
  add("inline_attachments", inline_attachments);
  return {{"limits", std::move(values)}, {"sources", std::move(sources)}};
}

std::size_t metadata_size(const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::size_t size = 2;
  for (const auto& [key, value] : metadata) size += json_string_size(key) + json_string_size(value) + 8;
  return size;
}

std::size_t request_id_stamp_size() {
  return std::strlen(kRequestIdKey) + kMaxRequestIdLength + 8 + std::strlen(kClientKey) + kMaxClientNameLength + 8;
}

std::size_t options_size(const Email& email) {
  std::size_t size = 0;
  for (const auto& [name, value] : email.headers) size += 2 + name.size() + value.size();  // h:
  if (email.reply_to) size += std::strlen("h:Reply-To") + format_address(*email.reply_to).size();
  for (const auto& tag : email.tags) size += std::strlen("o:tag") + tag.size();
  for (const auto& [key, value] : email.metadata) size += 2 + key.size() + value.size();  // v:
  size += 2 + std::strlen(kRequestIdKey) + kMaxRequestIdLength;  // v:mailrelay_request_id
  size += 2 + std::strlen(kClientKey) + kMaxClientNameLength;     // v:mailrelay_client
  size += std::strlen("o:testmode") + std::strlen("yes");
  return size;
}

}  // namespace mailrelay
