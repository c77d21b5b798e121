// Small text helpers shared by every layer: times as the audit log writes them, and redaction of
// addresses in provider text. Pure; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace mailrelay {

// A time as the audit log writes times: 2026-12-03T06:00:00.123Z.
std::string utc_text(std::chrono::system_clock::time_point when);

// Replaces anything shaped like an email address in provider text with "<address>".
std::string redact_addresses(std::string_view text);

}  // namespace mailrelay
