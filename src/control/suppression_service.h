// SuppressionService: the suppression list by hand (README "Delivery events and suppressions"):
// GET, PUT and DELETE /v1/suppressions/{address}. Each change is one "control" audit line (the
// address as domain and hash). Thread-safe.
#pragma once

#include "admin_request.h"
#include "audit_log.h"
#include "clock.h"
#include "suppressions.h"

namespace mailrelay {

class SuppressionService {
 public:
  SuppressionService(Suppressions& suppressions, AuditLog& audit, Clock& clock)
      : suppressions_(suppressions), audit_(audit), clock_(clock) {}

  // The caller has the admin scope; `request.param` is the address as requested.
  AdminAnswer handle(const AdminRequest& request);

 private:
  AdminAnswer look_up(const AdminRequest& request);
  AdminAnswer change(const AdminRequest& request);

  Suppressions& suppressions_;
  AuditLog& audit_;
  Clock& clock_;
};

}  // namespace mailrelay
