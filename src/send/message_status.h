// Message status (README "Message status"): what GET /v1/messages/{request_id} answers. A send
// that reached the relay leaves its outcome in the state store under its request id; delivery
// events are added to it by EventService; any instance sharing the store reads both. Records
// hold no address: attempts are redacted as in the audit log, recipients are domains and keyed
// hashes. Thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime.h"
#include "state_store.h"

namespace mailrelay {

struct SendReport;

// The outcome kept for `report`'s send (whose relay ran), as the store holds it.
std::string message_outcome(const std::string& request_id, const SendReport& report, const std::string& received_at,
                            const std::string& completed_at);

struct StatusAnswer {
  int status = 200;
  nlohmann::ordered_json body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class MessageStatusService {
 public:
  explicit MessageStatusService(StateStore& store) : store_(store) {}

  // GET /v1/messages/{message_id} for `caller` (authorized by the access phase): the caller's own
  // send under that id (ids are per client, SPEC §21), or for an admin every client's; 404 when
  // the caller has none (whether another client used the id is not told), or it expired. `id`
  // is this request's id (error answers).
  StatusAnswer read(const Authorization& caller, const std::string& message_id, const std::string& id);

 private:
  StateStore& store_;
};

}  // namespace mailrelay
