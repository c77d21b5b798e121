// AuditLog: the audit trail operators grep (SPEC section 4). One JSON object per line:
// "attempt" before every provider call, "request" once per HTTP request, written before its answer
// leaves. Holds no subject, body, attachment, full address, token or key: recipients appear as a
// count, their domains, and (with a key) truncated HMAC-SHA256 hashes. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "clock.h"
#include "email.h"
#include "relay.h"
#include "result.h"

namespace mailrelay {

struct AuditSettings {
  std::string path = "-";              // "-" = stdout
  std::uint64_t max_bytes = 104857600; // built-in rotation; 0 = never (logrotate + SIGUSR1)
  int max_files = 10;                  // rotated files kept: path.1 (newest) ... path.N
  std::string recipient_key;           // HMAC key; empty = no recipient hashes
};

// Everything the request line says about one HTTP request.
struct RequestRecord {
  std::string request_id;
  std::string client_ip;
  std::optional<std::string> client;  // token name
  std::string method;
  std::string path;
  int status = 0;
  std::string outcome;  // "sent", "replayed", or the error code answered
  std::string replay_of;  // for an idempotent replay: the request id of the first answer
  std::string refused_by;  // the limit that refused the request (max_in_flight, body_budget)
  double latency_ms = 0;
  const Email* email = nullptr;         // when the body parsed
  const RelayResult* relay = nullptr;   // when the relay ran
};

// The keyed hash of an address as the audit log writes it: HMAC-SHA256 over the lower-cased
// address, first 16 bytes in hex. `mailrelayd hash-address` prints the same.
std::string hash_address(std::string_view key, std::string_view address);

// Replaces anything shaped like an email address in provider text with "<address>".
std::string redact_addresses(std::string_view text);

class AuditLog final : public AttemptObserver {
 public:
  // Opens the file (creating it) or stdout. Fails with a message when the file cannot be opened.
  static Result<std::unique_ptr<AuditLog>> open(const AuditSettings& settings, Clock& clock,
                                               spdlog::logger& ops_log);

  void before_attempt(const std::string& request_id, const std::string& provider, int try_number) override;
  void request(const RequestRecord& record);

  // Reopens the file by name (after logrotate moved it away). No-op on stdout.
  void reopen();
  void flush();

  // The request line as JSON, keys in a fixed order: ts, event, request_id first (exposed for tests).
  nlohmann::ordered_json request_json(const RequestRecord& record) const;

 private:
  class Sink;
  AuditLog(std::shared_ptr<Sink> sink, std::shared_ptr<spdlog::logger> logger, std::string key, Clock& clock);
  void write(const nlohmann::ordered_json& line);
  std::string timestamp() const;

  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
  std::string recipient_key_;
  Clock& clock_;
};

}  // namespace mailrelay
