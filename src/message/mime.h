// RFC 5322 / MIME helpers: address formatting, header encoding (RFC 2047), quoted-printable,
// and rendering a whole Email as an .eml message. Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "email.h"

namespace mailrelay {

// "Name <a@b>" with the name quoted when it needs to be; plain UTF-8 (for provider APIs).
std::string format_address(const Address& address);

// One header line "Name: value\r\n", folded; non-ASCII or over-long values become RFC 2047
// encoded-words, so no line exceeds 78 characters and no raw 8-bit byte appears.
std::string encode_header(std::string_view name, std::string_view value);

// A header value for an API that takes headers as JSON strings: unchanged when it is printable
// ASCII (and not `always_encode`), else RFC 2047 encoded-words separated by spaces (no line breaks).
std::string header_value_7bit(std::string_view value, bool always_encode = false);

// "Name: a, b\r\n" for an address list; display names encoded as needed, addresses raw.
std::string encode_address_header(std::string_view name, const std::vector<Address>& addresses);

// Quoted-printable (RFC 2045 6.7) with CRLF line ends; input line ends are normalised.
std::string quoted_printable(std::string_view text);

// RFC 5322 date ("Sun, 22 Nov 2026 20:58:06 +0000").
std::string rfc5322_date(std::chrono::system_clock::time_point when);

// The complete message: headers, then text/html alternatives and attachments as MIME multipart
// when needed. `boundary_seed` makes the multipart boundaries unique to the message.
// An empty `message_id` leaves the Message-ID header to the provider; `bcc_header` false leaves
// out the Bcc header (a message handed to a provider as raw MIME must not show its Bcc).
std::string render_eml(const Email& email, std::string_view message_id,
                       std::chrono::system_clock::time_point date, std::string_view boundary_seed,
                       bool bcc_header = true);

}  // namespace mailrelay
