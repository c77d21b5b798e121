// libFuzzer target: routing of request paths (routes.h) and the method check. Text comparison
// only; checks that a parametric route's segment is one non-empty segment, and that a match
// is the path (the pattern with the segment put back).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "routes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t space = input.find(' ');
  const std::string_view method = space == std::string_view::npos ? std::string_view() : input.substr(0, space);
  const std::string_view path = space == std::string_view::npos ? input : input.substr(space + 1);
  const mailrelay::RouteMatch m = mailrelay::match_route(path);
  if (!m.route) {
    if (!m.param.empty()) std::abort();
    return 0;
  }
  const std::string_view pattern = m.route->pattern;
  const std::size_t brace = pattern.find('{');
  if (brace == std::string_view::npos) {
    if (path != pattern || !m.param.empty()) std::abort();
  } else {
    if (m.param.empty() || m.param.find('/') != std::string::npos) std::abort();
    if (std::string(pattern.substr(0, brace)) + m.param != path) std::abort();
  }
  if (const mailrelay::Route* row = mailrelay::route_for(*m.route, method); row && row->pattern != pattern) std::abort();
  (void)mailrelay::allowed_methods(*m.route);
  return 0;
}
