// Request ids: the caller's X-Request-Id when it is safe to echo, else a new ULID-style id
// (time-ordered, 26 Crockford base32 characters). Thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace mailrelay {

// True for [A-Za-z0-9._:-]{1,128} (README "API").
bool is_acceptable_request_id(std::string_view id);

std::string new_request_id();

}  // namespace mailrelay
