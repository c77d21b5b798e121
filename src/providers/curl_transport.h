// CurlTransport: HttpTransport over libcurl. Thread-safe: each call borrows an easy handle that
// no other thread uses meanwhile, and returns it so its connection cache serves the next call.
// At most `max_idle_handles` wait to be reused, none longer than `idle_handle_ttl`: after a burst
// the handles (buffers, connection, TLS state: tens of KiB each) go.
// REQUIRES: curl_global_init() was called once, before any thread started.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
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
  std::size_t max_idle_handles = 64;
  std::chrono::seconds idle_handle_ttl{60};
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
  using Idle = std::pair<void*, std::chrono::steady_clock::time_point>;  // CURL*, when it came back
  std::mutex mutex_;  // guards idle_
  std::deque<Idle> idle_;  // guarded by mutex_; oldest first; each handle has its own connection cache
};

}  // namespace mailrelay
