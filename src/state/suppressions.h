// Suppressions: the recipients no provider is asked to send to (README "Delivery events and suppressions"), shared by every
// provider and, with Redis, by every instance. Addresses are kept under a keyed hash
// (suppression_hash), never in clear. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "email.h"
#include "result.h"
#include "state_store.h"

namespace mailrelay {

// A suppressed recipient of a message: its field ("to[1]") and why.
struct SuppressedRecipient {
  std::string field;
  Suppression why;
};

class Suppressions {
 public:
  // `key`: the audit recipient key ("" for none; see suppression_hash).
  Suppressions(StateStore& store, std::string key) : store_(store), key_(std::move(key)) {}

  // The first suppressed recipient of `email` (to, then cc, then bcc), in one store round trip.
  Result<std::optional<SuppressedRecipient>> first_suppressed(const Email& email);
  Result<std::optional<Suppression>> find(const std::string& address);
  Result<bool> add(const std::string& address, const Suppression& why);
  // True when the address was suppressed.
  Result<bool> remove(const std::string& address);

 private:
  StateStore& store_;
  const std::string key_;
};

}  // namespace mailrelay
