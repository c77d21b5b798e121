// AuditLog: the audit trail operators grep (README "Reading the audit log"). One JSON object per line:
// "attempt" before every provider call, "request" once per HTTP request, written before its answer
// leaves; "control" for an operator's change, "delivery" for a provider's webhook event. Holds no subject, body, attachment, full address, token or key: recipients appear as a
// count, their domains, and (with a key) truncated HMAC-SHA256 hashes. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "clock.h"
#include "delivery_events.h"
#include "email.h"
#include "relay.h"
#include "text_helpers.h"
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
  std::string batch_id;               // a message of POST /v1/send/batch: the batch's request id
  std::string client_ip;
  std::optional<std::string> client;  // token name
  std::string method;
  std::string path;
  int status = 0;
  std::string outcome;  // "sent", "replayed", or the error code answered
  std::string replay_of;  // for an idempotent replay: the request id of the first answer
  std::string refused_by;  // the limit that refused the request (max_in_flight, body_budget, rate_limit)
  bool state_store_unavailable = false;  // the store failed and the request went on without it
  double latency_ms = 0;
  const Email* email = nullptr;         // when the body parsed
  const RelayResult* relay = nullptr;   // when the relay ran
  const nlohmann::ordered_json* attempts = nullptr;  // the answer's "attempts", when the relay ran
};

// One runtime change by an operator (README "Other endpoints"): the "control" line.
struct ControlRecord {
  std::string request_id;
  std::string client_ip;
  std::optional<std::string> client;
  std::string action;  // disable, enable, set_order, reset_order, suppress, unsuppress
  std::string provider;             // disable, enable
  std::vector<std::string> order;   // set_order
  std::string recipient;            // suppress, unsuppress: written as domain and hash only
  std::string reason;
};

// Told every line written (the audit stream); must not block. Thread-safe.
class AuditTap {
 public:
  virtual ~AuditTap() = default;
  virtual void line(std::string_view text) = 0;
};

// What the audit log has been through, for /metrics.
struct AuditCounters {
  std::uint64_t write_errors = 0;       // lines not written (each went to the operational log)
  std::uint64_t rotation_failures = 0;  // rotations that could not rename or open
  std::uint64_t reopen_failures = 0;    // reopens (SIGUSR1, retries) that could not open
};

// AuditSink: where audit lines go. The I/O seam of the audit log (a fake in tests).
// Implementations are thread-safe.
class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Appends `line` and a newline. True only if the whole line is in the file: a line never
  // stands torn in the file (a partial write is cut back off, or the next line starts afresh).
  virtual bool append(std::string_view line) = 0;
  // Opens the path again (after logrotate moved the file). "" on success, else why not; on
  // failure the sink keeps writing where it did and tries again later by itself.
  virtual std::string reopen() = 0;
  // Whether writes are likely to succeed again after failures (a reopen or rotation retried,
  // room on the disk); called by /readyz while the log is failing.
  virtual bool probe() = 0;
  // Rotation and reopen failures so far (write errors are the AuditLog's).
  virtual AuditCounters counters() const = 0;
};


// The keyed hash of an address as the audit log writes it: HMAC-SHA256 over the lower-cased
// address, first 16 bytes in hex. `mailrelayd hash-address` prints the same.
std::string hash_address(std::string_view key, std::string_view address);


class AuditLog final : public AttemptObserver {
 public:
  // Opens the file (creating it) or stdout. Fails with a message when the file cannot be opened.
  static Result<std::unique_ptr<AuditLog>> open(const AuditSettings& settings, Clock& clock,
                                               spdlog::logger& ops_log);
  AuditLog(std::unique_ptr<AuditSink> sink, std::string recipient_key, Clock& clock, spdlog::logger& ops_log);

  // False when the attempt line could not be written: the provider must not be called
  // (README "Reading the audit log": nothing goes out that is not on record).
  bool before_attempt(const std::string& request_id, const std::string& provider, int try_number) override;
  // False when the line could not be written; it then goes to the operational log instead,
  // whole, and is counted. Either way the operator has it.
  bool request(const RequestRecord& record);
  bool control(const ControlRecord& record);
  // One verified delivery event (README "Delivery events and suppressions"): the "delivery" line;
  // `suppressed` when it put the address on the suppression list.
  bool delivery(const DeliveryEvent& event, bool suppressed);
  // The keyed hash this log writes for `address`, or "" without a key.
  std::string recipient_hash(std::string_view address) const {
    return recipient_key_.empty() ? std::string() : hash_address(recipient_key_, address);
  }

  // Every line written from now on is also given to `tap` (may be null), which outlives this.
  // Set before any request is served.
  void set_tap(AuditTap* tap) { tap_ = tap; }

  // Reopens the file by name (after logrotate moved it away). "" on success, else why not (the
  // log keeps writing to the file it had and retries by itself). No-op on stdout.
  std::string reopen();

  // False while lines are failing (/readyz turns 503); true again once the sink looks writable.
  bool healthy();
  AuditCounters counters() const;

  // The request line as JSON, keys in a fixed order: ts, event, request_id first (exposed for tests).
  nlohmann::ordered_json request_json(const RequestRecord& record) const;

 private:
  bool write(const nlohmann::ordered_json& line);
  std::string timestamp() const;

  std::unique_ptr<AuditSink> sink_;
  std::string recipient_key_;
  Clock& clock_;
  spdlog::logger& ops_log_;
  AuditTap* tap_ = nullptr;
  std::atomic<bool> failing_{false};
  std::atomic<std::uint64_t> write_errors_{0};
};

}  // namespace mailrelay
