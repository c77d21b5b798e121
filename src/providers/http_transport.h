// HttpTransport: the one seam between the relay and the network. Implementations are thread-safe.
// A transport error is not an HTTP error: any HTTP response that arrives is returned as-is and the
// provider decides what its status means; TransportError is for when no complete response arrived.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "result.h"

namespace mailrelay {

// One multipart/form-data field. With a non-empty filename it is a file part.
struct FormField {
  std::string name;
  std::string value;
  std::string filename;
  std::string content_type;
};

struct HttpRequest {
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  // may carry credentials: never log
  // Either a raw body with its content type, or form fields sent as multipart/form-data.
  std::string content_type;
  std::string body;
  std::vector<FormField> form;
};

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  // First value of a header (name compared case-insensitively), or "".
  std::string header(std::string_view name) const;
};

enum class TransportFailure {
  kResolve,         // DNS lookup failed: nothing sent
  kConnect,         // TCP connect refused or unreachable: nothing sent
  kTls,             // handshake or certificate verification failed: nothing sent
  kTimeout,         // the per-attempt timeout ran out
  kConnectionLost,  // reset, closed or empty reply after the request went out
  kProtocol,        // the peer answered something that is not HTTP
  kResponseTooLarge,
  kOther,
};

struct TransportError {
  TransportFailure kind = TransportFailure::kOther;
  // False only when the request surely did not reach the provider (DNS, connect, TLS). True when
  // the provider may have received and accepted it: the failover policy needs that distinction.
  bool may_have_been_sent = true;
  std::string message;  // short and safe to log: no URL query, no header values
};

std::string_view to_string(TransportFailure kind);

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // POSTs `request`; `timeout` covers everything from connect to the last byte of the response.
  virtual Result<HttpResponse, TransportError> post(const HttpRequest& request,
                                                    std::chrono::milliseconds timeout) = 0;
};

}  // namespace mailrelay
