// HttpApi: the HTTP surface (SPEC section 3): routes, JSON in and out, status mapping. Nothing
// else: validation is in email.*, sending in relay.*. Thread-safe; one instance serves all workers.
#pragma once

#include <cstdint>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "clock.h"
#include "relay.h"
#include "token_store.h"

namespace mailrelay {

struct ApiSettings {
  std::uint64_t max_body_bytes = 10485760;
};

class HttpApi {
 public:
  // `tokens` may be null (no --tokens-file: protected mode, loopback only).
  HttpApi(Relay& relay, const TokenStore* tokens, ApiSettings settings, Clock& clock, spdlog::logger& log);

  // Registers routes, error/exception handlers and the body limit on `server`.
  void install(httplib::Server& server);

  // The JSON body of a 200/502/504 answer to POST /v1/send, minus request_id (exposed for tests).
  static nlohmann::json attempts_json(const RelayResult& result);

 private:
  void handle_send(const httplib::Request& req, httplib::Response& res);

  Relay& relay_;
  const TokenStore* tokens_;
  ApiSettings settings_;
  Clock& clock_;
  spdlog::logger& log_;
};

}  // namespace mailrelay
