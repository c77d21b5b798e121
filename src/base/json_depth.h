// JSON nesting measured on the raw text, before any parser allocates for it: a hostile body of
// a million '[' is turned away in one pass that builds nothing and recurses nowhere. Pure;
// thread-safe.
#pragma once

#include <string_view>

namespace mailrelay {

// The deepest nesting of arrays and objects in `body` (outside strings), counting stopped once
// it passes `stop_above` (the result is then stop_above + 1).
int json_nesting_depth(std::string_view body, int stop_above);

}  // namespace mailrelay
