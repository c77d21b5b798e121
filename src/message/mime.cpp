#include "mime.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>

#include "base64.h"

namespace mailrelay {
namespace {

constexpr std::size_t kMaxLine = 78;
// An encoded-word is at most 75 characters: "=?UTF-8?B?" + 60 base64 characters + "?=" carries 45
// bytes of text.
constexpr std::size_t kWordBytes = 45;

bool is_plain_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 32 && c <= 126; });
}

bool is_atom_phrase(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == ' ' ||
           std::string_view("!#$%&'*+-/=?^_`{|}~").find(c) != std::string_view::npos;
  });
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Splits UTF-8 text into encoded-words joined by `separator` (folding white space by default);
// never splits a character.
std::string encoded_words(std::string_view text, std::string_view separator = "\r\n ") {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t end = std::min(text.size(), i + kWordBytes);
    while (end < text.size() && end > i + 1 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
    if (!out.empty()) out += separator;
    out += "=?UTF-8?B?" + base64_encode(text.substr(i, end - i)) + "?=";
    i = end;
  }
  return out;
}

std::string phrase(std::string_view name) {
  if (is_plain_ascii(name) && name.size() <= 60) return is_atom_phrase(name) ? std::string(name) : quote(name);
  return encoded_words(name);
}

std::string random_free_boundary(std::string_view seed, int depth) {
  // QP never emits "=_" and base64 has no '_', so this cannot occur inside an encoded part.
  return "=_mailrelay_" + std::string(seed) + "_" + std::to_string(depth);
}

std::string text_part(std::string_view subtype, std::string_view body) {
  return "Content-Type: text/" + std::string(subtype) + "; charset=utf-8\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + quoted_printable(body);
}

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || std::string_view("!#$&+-.^_`|~").find(c) != std::string_view::npos) {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

std::string attachment_part(const Attachment& a) {
  std::string disposition = a.is_inline ? "Content-Disposition: inline;\r\n " : "Content-Disposition: attachment;\r\n ";
  if (is_plain_ascii(a.filename) && a.filename.find_first_of("\"\\") == std::string::npos &&
      a.filename.size() <= 60) {
    disposition += "filename=\"" + a.filename + "\"";
  } else {
    disposition += "filename*=UTF-8''" + percent_encode(a.filename);  // RFC 2231
  }
  // The html refers to an inline part as cid:<content_id> (RFC 2392).
  std::string content_id = a.is_inline ? "\r\nContent-ID: <" + a.content_id + ">" : "";
  return "Content-Type: " + a.content_type + "\r\n" + disposition + content_id +
         "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64_encode_mime(a.content) + "\r\n";
}

std::string multipart(std::string_view subtype, const std::string& boundary,
                      const std::vector<std::string>& parts, std::string_view parameters = "") {
  std::string out = "Content-Type: multipart/" + std::string(subtype) + ";" + std::string(parameters) +
                    "\r\n boundary=\"" + boundary +
                    "\"\r\n\r\nThis is a multi-part message in MIME format.\r\n";
  for (const auto& part : parts) out += "\r\n--" + boundary + "\r\n" + part;
  return out + "\r\n--" + boundary + "--\r\n";
}

}  // namespace

std::string format_address(const Address& address) {
  if (address.name.empty()) return address.email;
  std::string name = is_atom_phrase(address.name) ? address.name : quote(address.name);
  return name + " <" + address.email + ">";
}

std::string header_value_7bit(std::string_view value, bool always_encode) {
  if (!always_encode && is_plain_ascii(value)) return std::string(value);
  return encoded_words(value, " ");
}

std::string encode_header(std::string_view name, std::string_view value) {
  std::string line = std::string(name) + ": ";
  if (is_plain_ascii(value) && line.size() + value.size() <= kMaxLine) return line + std::string(value) + "\r\n";
  return line + encoded_words(value) + "\r\n";
}

std::string encode_address_header(std::string_view name, const std::vector<Address>& addresses) {
  std::string out = std::string(name) + ": ";
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    if (i) out += ",\r\n ";
    const Address& a = addresses[i];
    out += a.name.empty() ? a.email : phrase(a.name) + " <" + a.email + ">";
  }
  return out + "\r\n";
}

std::string quoted_printable(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  std::size_t column = 0;
  auto emit = [&](std::string_view token) {
    if (column + token.size() > 75) {  // leave room for the soft break '='
      out += "=\r\n";
      column = 0;
    }
    out += token;
    column += token.size();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;  // CRLF: handled at LF
    if (c == '\n' || c == '\r') {
      out += "\r\n";
      column = 0;
      continue;
    }
    bool line_end = i + 1 == text.size() || text[i + 1] == '\n' || text[i + 1] == '\r';
    bool literal = (u >= 33 && u <= 126 && c != '=') || ((c == ' ' || c == '\t') && !line_end);
    // A line beginning with "." or "From " is safe in QP but some agents mangle it; encode the dot.
    if (literal && c == '.' && column == 0) literal = false;
    if (literal) {
      emit(std::string_view(&text[i], 1));
    } else {
      char encoded[3] = {'=', hex[u >> 4], hex[u & 15]};
      emit(std::string_view(encoded, 3));
    }
  }
  return out;
}

std::string rfc5322_date(std::chrono::system_clock::time_point when) {
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  static const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
                months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string render_eml(const Email& email, std::string_view message_id,
                       std::chrono::system_clock::time_point date, std::string_view boundary_seed, bool bcc_header) {
  std::string out;
  out += encode_address_header("From", {email.from});
  out += encode_address_header("To", email.to);
  if (!email.cc.empty()) out += encode_address_header("Cc", email.cc);
  // Kept in the local copy so a developer can see who was blind-copied, as mail clients do for
  // their own sent folder. Real providers never show it to recipients.
  if (bcc_header && !email.bcc.empty()) out += encode_address_header("Bcc", email.bcc);
  if (email.reply_to) out += encode_address_header("Reply-To", {*email.reply_to});
  out += encode_header("Subject", email.subject);
  out += "Date: " + rfc5322_date(date) + "\r\n";
  if (!message_id.empty()) out += "Message-ID: " + std::string(message_id) + "\r\n";
  out += "MIME-Version: 1.0\r\n";
  for (const auto& [name, value] : email.headers) out += encode_header(name, value);
  for (const auto& tag : email.tags) out += encode_header("X-Mailrelay-Tag", tag);
  for (const auto& [key, value] : email.metadata) out += encode_header("X-Mailrelay-Metadata-" + key, value);
  if (email.sandbox) out += "X-Mailrelay-Sandbox: true\r\n";

  std::string body;
  if (!email.text.empty() && !email.html.empty()) {
    body = multipart("alternative", random_free_boundary(boundary_seed, 2),
                     {text_part("plain", email.text), text_part("html", email.html)});
  } else {
    body = email.text.empty() ? text_part("html", email.html) : text_part("plain", email.text);
  }
  // Inline parts sit beside the body they illustrate in multipart/related (RFC 2387); other
  // attachments beside both in multipart/mixed.
  std::vector<std::string> related{body}, mixed;
  for (const auto& a : email.attachments) (a.is_inline ? related : mixed).push_back(attachment_part(a));
  if (related.size() > 1) {
    // RFC 2387 3.1: "type" names the root part's type.
    std::string root = body.substr(std::strlen("Content-Type: "), body.find_first_of(";\r") - std::strlen("Content-Type: "));
    body = multipart("related", random_free_boundary(boundary_seed, 3), related, "\r\n type=\"" + root + "\";");
  }
  if (!mixed.empty()) {
    mixed.insert(mixed.begin(), body);
    body = multipart("mixed", random_free_boundary(boundary_seed, 1), mixed);
  }
  return out + body;
}

}  // namespace mailrelay
