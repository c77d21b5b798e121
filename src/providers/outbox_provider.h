// OutboxProvider: the local/dev provider. Writes each message as an RFC 5322 .eml file into a
// directory and sends nothing. Thread-safe.
#pragma once

#include <atomic>
#include <string>

#include "clock.h"
#include "email_provider.h"

namespace mailrelay {

class OutboxProvider final : public EmailProvider {
 public:
  OutboxProvider(std::string directory, Clock& clock);
  const std::string& name() const override { return name_; }
  // The message id is the Message-ID header of the written file.
  AttemptResult send(const Email& email, std::string_view request_id,
                     std::chrono::milliseconds timeout) override;
  // It never delivers anything: a sandboxed message is written like any other, marked
  // X-Mailrelay-Sandbox: true.
  bool supports_sandbox() const override { return true; }

 private:
  std::string name_ = "outbox";
  std::string directory_;
  Clock& clock_;
  std::atomic<unsigned long> sequence_{0};
};

}  // namespace mailrelay
