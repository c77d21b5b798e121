// CurlTransport: HttpTransport over libcurl. Thread-safe: each call borrows an easy handle that
// no other thread uses meanwhile, and returns it so its connection cache serves the next call.
// REQUIRES: curl_global_init() was called once, before any thread started.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "http_transport.h"

namespace mailrelay {

struct CurlTransportOptions {
  std::string ca_file;  // empty = the system store
  std::string proxy;    // empty = no proxy, whatever http_proxy/https_proxy say
  std::size_t max_response_bytes = 1 << 20;
};

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(CurlTransportOptions options);
  ~CurlTransport() override;
  CurlTransport(const CurlTransport&) = delete;
  CurlTransport& operator=(const CurlTransport&) = delete;

  Result<HttpResponse, TransportError> post(const HttpRequest& request,
                                            std::chrono::milliseconds timeout) override;

 private:
  void* acquire();
  void release(void* handle);

  CurlTransportOptions options_;
  std::mutex mutex_;
  std::vector<void*> idle_;  // CURL* easy handles, each with its own connection cache
};

}  // namespace mailrelay
