// The HTTP API's OpenAPI 3.1 document (docs/openapi.yaml, compiled in from docs/openapi.json),
// served at GET /v1/openapi.json.
#pragma once

#include <string_view>

namespace mailrelay {

std::string_view openapi_document();

}  // namespace mailrelay
