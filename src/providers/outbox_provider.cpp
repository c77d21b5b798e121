#include "outbox_provider.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "event_loop.h"
#include "mime.h"
#include "provider_registry.h"

namespace mailrelay {
namespace {

bool write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

namespace {
// Written under a dot-name and renamed, so a watcher never sees half a message.
AttemptResult write_file(const std::string& temp_path, const std::string& final_path, const std::string& eml) {
  AttemptResult result;
  int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) {
    result.outcome = AttemptOutcome::kError;
    result.error = std::string("cannot create file in outbox directory: ") + std::strerror(errno);
    return result;
  }
  bool ok = write_all(fd, eml);
  int saved_errno = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    if (ok) saved_errno = errno;
    ::unlink(temp_path.c_str());
    result.outcome = AttemptOutcome::kError;
    result.error = std::string("cannot write outbox file: ") + std::strerror(saved_errno);
    return result;
  }
  result.outcome = AttemptOutcome::kSent;
  return result;
}
}  // namespace

OutboxProvider::OutboxProvider(std::string directory, Clock& clock)
    : directory_(std::move(directory)), clock_(clock) {}

AttemptResult OutboxProvider::send(const Email& email, std::string_view request_id,
                                   std::chrono::milliseconds /*timeout: a local write*/) {
  auto now = clock_.wall_now();
  std::string seq = std::to_string(++sequence_);
  std::string stem(request_id);
  stem += "-" + seq;

  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);

  std::string domain = email.from.email.substr(email.from.email.rfind('@') + 1);
  std::string message_id = "<" + stem + "@" + domain + ">";
  std::string eml = render_eml(email, message_id, now, stem);

  std::string final_path = directory_ + "/" + stamp + "-" + stem + ".eml";
  std::string temp_path = directory_ + "/." + stamp + "-" + stem + ".tmp";
  AttemptResult result;
  // File system calls can block (a slow disk, NFS): on the blocking pool, never on an event loop.
  run_blocking([&] { result = write_file(temp_path, final_path, eml); });
  if (result.outcome == AttemptOutcome::kError) return result;
  result.outcome = AttemptOutcome::kSent;
  result.message_id = message_id;
  return result;
}


const ProviderDescriptor& outbox_descriptor() {
  static const ProviderDescriptor kDescriptor{
      "outbox",
      {{"dir", "", "directory the outbox provider writes .eml files to (created if missing)"}},
      {},
      [](const ProviderConfig& c) -> std::optional<std::string> {
        if (c.option("dir").empty()) return std::string("provider 'outbox' is listed in --providers but --outbox-dir is not set");
        return std::nullopt;
      },
      [](const ProviderConfig& c, HttpTransport&, Clock& clock) -> Result<std::unique_ptr<EmailProvider>> {
        const std::string& dir = c.option("dir");
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec || access(dir.c_str(), W_OK) != 0) {
          return Error{"config", "--outbox-dir " + dir + " is not a writable directory", ""};
        }
        return std::unique_ptr<EmailProvider>(new OutboxProvider(dir, clock));
      },
      std::nullopt};
  return kDescriptor;
}

}  // namespace mailrelay
