// libFuzzer target: the providers' webhook bodies (README "Delivery events and suppressions", 19), each parser on the same bytes:
// the nesting check, SendGrid's batch, Mailgun's signature scan and event, Postmark's record.
// Checks that every event is in the relay's vocabulary and that only bodies within the nesting
// limit reach the DOM parsers (as EventService does).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "delivery_events.h"
#include "mailgun_provider.h"
#include "postmark_provider.h"
#include "sendgrid_provider.h"
#include "json_depth.h"

namespace {

void check(const mailrelay::Result<mailrelay::WebhookBatch>& batch) {
  static const std::set<std::string> kTypes = {"delivered", "deferred",     "bounced", "dropped",
                                               "complained", "unsubscribed", "opened",  "clicked"};
  if (!batch) return;
  for (const auto& e : batch.value().events) {
    if (kTypes.count(e.type) == 0) std::abort();
    if (e.type == "bounced" && e.bounce_class != "hard" && e.bounce_class != "soft") std::abort();
    (void)e.to_json("hash");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)mailrelay::mailgun_signature(body);  // runs before verification, on any body
  if (mailrelay::json_nesting_depth(body, mailrelay::kMaxWebhookDepth) > mailrelay::kMaxWebhookDepth) return 0;
  check(mailrelay::parse_sendgrid_events(body, 1700000000));
  check(mailrelay::parse_mailgun_event(nlohmann::json::parse(body, nullptr, false)));
  check(mailrelay::parse_postmark_event(body));
  return 0;
}
