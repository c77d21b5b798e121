#include "sigv4.h"

#include <algorithm>
#include <cctype>
#include <ctime>

#include "ascii.h"
#include "hash.h"

namespace mailrelay {
namespace {

// Canonical header value: leading and trailing spaces trimmed, runs of spaces made one.
std::string canonical_value(const std::string& value) {
  std::string out;
  bool space = false;
  for (char c : value) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> sigv4_sign(const SigV4Request& request, const std::string& region,
                                                            const std::string& service, const AwsCredentials& credentials,
                                                            std::chrono::system_clock::time_point when) {
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[17];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  const std::string amz_date = stamp;
  const std::string date = amz_date.substr(0, 8);

  std::vector<std::pair<std::string, std::string>> added{{"X-Amz-Date", amz_date}};
  if (!credentials.session_token.empty()) added.emplace_back("X-Amz-Security-Token", credentials.session_token);

  std::vector<std::pair<std::string, std::string>> signed_headers{{"host", canonical_value(request.host)}};
  for (const auto& [name, value] : request.headers) signed_headers.emplace_back(ascii_lower(name), canonical_value(value));
  for (const auto& [name, value] : added) signed_headers.emplace_back(ascii_lower(name), canonical_value(value));
  std::sort(signed_headers.begin(), signed_headers.end());

  std::string canonical_headers, names;
  for (const auto& [name, value] : signed_headers) {
    canonical_headers += name + ":" + value + "\n";
    names += (names.empty() ? "" : ";") + name;
  }
  const std::string canonical_request = request.method + "\n" + request.path + "\n" + "\n" + canonical_headers + "\n" +
                                        names + "\n" + sha256_hex(request.body);
  const std::string scope = date + "/" + region + "/" + service + "/aws4_request";
  const std::string string_to_sign = "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + sha256_hex(canonical_request);

  std::string key = hmac_sha256("AWS4" + credentials.secret_access_key, date);
  key = hmac_sha256(key, region);
  key = hmac_sha256(key, service);
  key = hmac_sha256(key, "aws4_request");
  const std::string signature = hmac_sha256(key, string_to_sign);

  added.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=" + credentials.access_key_id + "/" + scope +
                                          ", SignedHeaders=" + names + ", Signature=" +
                                          hex_lower(signature));
  return added;
}

}  // namespace mailrelay
