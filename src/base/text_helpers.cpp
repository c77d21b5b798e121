#include "text_helpers.h"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace mailrelay {

std::string redact_addresses(std::string_view text) {
  auto local_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-/=?^_`{|}~.").find(c) != std::string_view::npos;
  };
  auto domain_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'; };
  std::string out;
  std::size_t copied = 0;
  for (std::size_t at = text.find('@'); at != std::string_view::npos; at = text.find('@', at + 1)) {
    std::size_t begin = at, end = at + 1;
    while (begin > copied && local_char(text[begin - 1])) --begin;
    while (end < text.size() && domain_char(text[end])) ++end;
    if (begin == at || end == at + 1) continue;
    out.append(text.substr(copied, begin - copied));
    out += "<address>";
    copied = end;
    at = end - 1;
  }
  out.append(text.substr(copied));
  return out;
}

std::string utc_text(std::chrono::system_clock::time_point when) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count() % 1000;
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

}  // namespace mailrelay
