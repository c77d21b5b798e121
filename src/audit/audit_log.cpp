#include "audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <set>

#include "ascii.h"
#include "hash.h"

namespace mailrelay {

using json = nlohmann::ordered_json;  // keys stay in the order written: ts, event, request_id, ...

namespace {

using std::chrono::milliseconds;

// One open descriptor of the audit file. Writers hold it through a shared_ptr while they write,
// so the descriptor under a write is never closed or reused; rotation and reopen only swap it.
struct OpenFile {
  int fd = -1;
  bool owned = true;                    // false for stdout
  bool regular = true;                  // only regular files rotate (not stdout, a FIFO, /dev/...)
  dev_t dev = 0;                        // which file it is, to notice when the path names another
  ino_t ino = 0;
  std::atomic<std::uint64_t> size{0};   // bytes in the file, counting bytes being written
  ~OpenFile() {
    if (owned && fd >= 0) ::close(fd);
  }
};

std::shared_ptr<OpenFile> open_path(const std::string& path, std::string& error) {
  auto file = std::make_shared<OpenFile>();
  // Read and write: a torn line is read back before it is cut off (see cut_back).
  file->fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  struct stat st {};
  if (file->fd < 0 || ::fstat(file->fd, &st) != 0) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  file->regular = S_ISREG(st.st_mode);
  file->dev = st.st_dev;
  file->ino = st.st_ino;
  file->size = static_cast<std::uint64_t>(st.st_size);
  return file;
}

// The audit file (or stdout): each line is written whole (write(2) on an O_APPEND descriptor,
// again for what a short write left), in the file before the answer it describes is sent. No writer ever waits for another writer or for
// maintenance: rotation and reopen happen on one writer's thread (or the signal thread) while
// the others keep appending to the descriptor they hold, whose lines land in the rotated file.
// A rotation or reopen that fails is reported once, counted, and retried with backoff (1 s
// doubling to 60 s) while lines go on into the file the sink has.
class FileSink final : public AuditSink {
 public:
  FileSink(std::string path, std::uint64_t max_bytes, int max_files, Clock& clock, spdlog::logger& log)
      : path_(std::move(path)), max_bytes_(path_ == "-" ? 0 : max_bytes), max_files_(max_files), clock_(clock), log_(log) {}

  std::string start() {
    if (path_ == "-") {
      auto out = std::make_shared<OpenFile>();
      out->fd = STDOUT_FILENO;
      out->owned = false;
      out->regular = false;
      std::atomic_store(&file_, out);
      return "";
    }
    std::string error;
    auto file = open_path(path_, error);
    if (file) std::atomic_store(&file_, file);
    return error;
  }

  bool append(std::string_view line) override {
    std::string out;
    out.reserve(line.size() + 2);
    // After a torn write that could not be cut back off, the next line starts on a line of its own.
    if (torn_.exchange(false)) out += '\n';
    out.append(line.data(), line.size());
    out += '\n';
    std::shared_ptr<OpenFile> file = reserve(out.size());
    std::size_t written = 0;
    while (written < out.size()) {  // a partial write is completed while the disk takes bytes
      ssize_t n = ::write(file->fd, out.data() + written, out.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      written += static_cast<std::size_t>(n);
    }
    if (written == out.size()) return true;
    const int error = errno;
    file->size -= out.size() - written;
    if (written > 0) cut_back(*file, std::string_view(out).substr(0, written));
    errno = error;
    return false;
  }

  std::string reopen() override {
    if (path_ == "-") return "";
    std::lock_guard<std::timed_mutex> lock(maintenance_);
    return reopen_locked();
  }

  bool probe() override {
    if (reopen_pending_ && !backing_off()) {
      std::unique_lock<std::timed_mutex> lock(maintenance_, std::try_to_lock);
      if (lock && reopen_pending_) reopen_locked();
    }
    if (reopen_pending_) return false;
    std::shared_ptr<OpenFile> file = std::atomic_load(&file_);
    // Room on the file system is the only sign there is; stdout, a FIFO or a device give none,
    // so they stay failing until a line gets through.
    struct statvfs fs {};
    if (!file->regular || ::fstatvfs(file->fd, &fs) != 0) return false;
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize >= 64 * 1024;
  }

  AuditCounters counters() const override {
    AuditCounters c;
    c.rotation_failures = rotation_failures_;
    c.reopen_failures = reopen_failures_;
    return c;
  }

 private:
  bool backing_off() const { return clock_.now().time_since_epoch().count() < retry_at_; }

  // The file to write `bytes` to, with the bytes counted in its size. Bytes are reserved before
  // they are written, so concurrent writers never take a file past max_bytes together. When the
  // file is full, one writer rotates it while the others wait for that (50 ms at most); while a
  // failed rotation backs off, lines go on into the full file. A failed reopen is retried here.
  std::shared_ptr<OpenFile> reserve(std::size_t bytes) {
    follow_path();
    for (int round = 0;; ++round) {
      if (reopen_pending_ && !backing_off()) {
        std::unique_lock<std::timed_mutex> lock(maintenance_, std::try_to_lock);
        if (lock && reopen_pending_) reopen_locked();
      }
      std::shared_ptr<OpenFile> file = std::atomic_load(&file_);
      const std::uint64_t before = file->size.fetch_add(bytes);
      if (max_bytes_ == 0 || !file->regular || before == 0 || before + bytes <= max_bytes_ || round >= 16 || backing_off()) return file;
      std::unique_lock<std::timed_mutex> lock(maintenance_, milliseconds(50));
      if (!lock) return file;  // a rotation is taking too long: this line goes into the full file
      file->size -= bytes;
      if (std::atomic_load(&file_) == file && !backing_off()) rotate_locked();  // unless done meanwhile
    }
  }

  // When logrotate (or anyone) renamed or removed the file, the path is opened again, at the first
  // line a second or more after the last look: rotation works even when the SIGUSR1 of its
  // postrotate never arrives (no systemd, a container, a typo). One stat(2) a second at most.
  void follow_path() {
    using Rep = Clock::TimePoint::rep;
    const Rep now = clock_.now().time_since_epoch().count();
    Rep next = next_look_.load();
    const Rep second = std::chrono::duration_cast<Clock::TimePoint::duration>(std::chrono::seconds(1)).count();
    if (now < next || !next_look_.compare_exchange_strong(next, now + second)) return;
    std::shared_ptr<OpenFile> file = std::atomic_load(&file_);
    struct stat st {};
    if (!file->regular || !file->owned || (::stat(path_.c_str(), &st) == 0 && st.st_dev == file->dev && st.st_ino == file->ino)) {
      return;
    }
    std::unique_lock<std::timed_mutex> lock(maintenance_, std::try_to_lock);
    if (!lock || reopen_pending_ || std::atomic_load(&file_) != file) return;  // busy, or done meanwhile
    if (reopen_locked().empty()) log_.info("audit log: {} was renamed or removed; opened it again", path_);
  }

  // path.N-1 -> path.N, ..., path -> path.1, then a fresh path. Any step failing stops it before
  // the next rename could overwrite a file. REQUIRES: maintenance_ held.
  void rotate_locked() {
    auto failed = [&](const std::string& what) {
      ++rotation_failures_;
      auto wait = backoff();
      log_.error("audit log: rotation failed: {}; still writing to {}; next try in {} s", what, path_,
                 wait.count() / 1000);
    };
    if (max_files_ > 0) {
      // Only the files that exist are shifted (path.1 ... path.k, k < max_files); path.max_files goes.
      int existing = 0;
      struct stat st {};
      while (existing < max_files_ && ::stat((path_ + "." + std::to_string(existing + 1)).c_str(), &st) == 0) ++existing;
      if (existing == max_files_) {
        const std::string last = path_ + "." + std::to_string(max_files_);
        if (std::remove(last.c_str()) != 0) return failed("cannot remove " + last + ": " + std::strerror(errno));
        --existing;
      }
      for (int i = existing; i >= 0; --i) {
        const std::string from = i == 0 ? path_ : path_ + "." + std::to_string(i);
        const std::string to = path_ + "." + std::to_string(i + 1);
        if (std::rename(from.c_str(), to.c_str()) != 0) {
          return failed("cannot rename " + from + " to " + to + ": " + std::strerror(errno));
        }
      }
    } else if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
      return failed("cannot remove " + path_ + ": " + std::strerror(errno));
    }
    // Renamed: the descriptor writers hold now writes to path.1. A new path is opened; if that
    // fails, lines go on into path.1 and the open is retried.
    if (!reopen_locked().empty()) ++rotation_failures_;
  }

  // REQUIRES: maintenance_ held.
  std::string reopen_locked() {
    std::string error;
    auto file = open_path(path_, error);
    if (!file) {
      ++reopen_failures_;
      reopen_pending_ = true;
      auto wait = backoff();
      log_.error("audit log: {}; still writing to the file open before; next try in {} s", error, wait.count() / 1000);
      return error;
    }
    std::atomic_store(&file_, file);
    reopen_pending_ = false;
    backoff_ = milliseconds(0);
    retry_at_ = 0;
    return "";
  }

  // REQUIRES: maintenance_ held. The wait before the next try, and sets it.
  milliseconds backoff() {
    backoff_ = std::min(milliseconds(60000), std::max(milliseconds(1000), backoff_ * 2));
    retry_at_ = (clock_.now() + backoff_).time_since_epoch().count();
    return backoff_;
  }

  // A line written in part (the disk filled up mid-line) is cut back off the end of the file,
  // as long as nothing was appended after it; otherwise the next line starts on a new line.
  void cut_back(OpenFile& file, std::string_view part) {
    std::lock_guard<std::mutex> lock(cut_mutex_);
    struct stat st {};
    std::string tail(part.size(), '\0');
    if (::fstat(file.fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) >= part.size()) {
      const off_t at = st.st_size - static_cast<off_t>(part.size());
      if (::pread(file.fd, tail.data(), tail.size(), at) == static_cast<ssize_t>(tail.size()) && tail == part &&
          ::ftruncate(file.fd, at) == 0) {
        file.size -= part.size();
        return;
      }
    }
    torn_ = true;
  }

  const std::string path_;
  const std::uint64_t max_bytes_;
  const int max_files_;
  Clock& clock_;
  spdlog::logger& log_;
  std::shared_ptr<OpenFile> file_;  // accessed with std::atomic_load/atomic_store only
  std::timed_mutex maintenance_;    // one rotation or reopen at a time; writers wait 50 ms at most
  milliseconds backoff_{0};         // guarded by maintenance_
  std::atomic<bool> reopen_pending_{false};
  std::atomic<Clock::TimePoint::rep> retry_at_{0};  // no maintenance before this time
  std::atomic<Clock::TimePoint::rep> next_look_{0};  // follow_path: the next look at the path
  std::atomic<std::uint64_t> rotation_failures_{0}, reopen_failures_{0};
  std::mutex cut_mutex_;  // one cut-back at a time
  std::atomic<bool> torn_{false};
};

}  // namespace

std::string hash_address(std::string_view key, std::string_view address) {
  return hmac_sha256_hex(key, ascii_lower(address)).substr(0, 32);  // the first 16 bytes
}

Result<std::unique_ptr<AuditLog>> AuditLog::open(const AuditSettings& settings, Clock& clock,
                                                 spdlog::logger& ops_log) {
  auto sink = std::make_unique<FileSink>(settings.path, settings.max_bytes, settings.max_files, clock, ops_log);
  std::string error = sink->start();
  if (!error.empty()) return Error{"config", "cannot open --audit-log: " + error, ""};
  return std::make_unique<AuditLog>(std::move(sink), settings.recipient_key, clock, ops_log);
}

AuditLog::AuditLog(std::unique_ptr<AuditSink> sink, std::string recipient_key, Clock& clock, spdlog::logger& ops_log)
    : sink_(std::move(sink)), recipient_key_(std::move(recipient_key)), clock_(clock), ops_log_(ops_log) {}

std::string AuditLog::timestamp() const { return utc_timestamp(clock_); }

bool AuditLog::write(const json& line) {
  const std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace);
  if (tap_) tap_->line(text);
  if (sink_->append(text)) return true;
  // The line still reaches the operator: whole, in the operational log (journald). Audit lines
  // hold no addresses, bodies or secrets, so it may go there.
  const int error = errno;
  ++write_errors_;
  failing_ = true;
  ops_log_.error("audit log: write failed ({}); the line follows: {}", std::strerror(error), text);
  return false;
}

bool AuditLog::before_attempt(const std::string& request_id, const std::string& provider, int try_number) {
  return write(json{{"ts", timestamp()}, {"event", "attempt"}, {"request_id", request_id},
                    {"provider", provider}, {"try", try_number}});
}

json AuditLog::request_json(const RequestRecord& r) const {
  json line{{"ts", timestamp()},
            {"event", "request"},
            {"request_id", r.request_id},
            {"client_ip", r.client_ip},
            {"client", r.client ? json(*r.client) : json(nullptr)},
            {"method", r.method},
            {"path", r.path},
            {"status", r.status},
            {"outcome", r.outcome},
            {"provider", nullptr},
            {"provider_message_id", nullptr},
            {"latency_ms", std::round(r.latency_ms * 10) / 10},
            {"retries", 0},
            {"attempts", json::array()},
            {"stop_reason", nullptr},
            {"recipients", 0}};
  if (!r.batch_id.empty()) line["batch_id"] = r.batch_id;
  if (!r.replay_of.empty()) line["replay_of"] = r.replay_of;
  if (!r.refused_by.empty()) line["refused_by"] = r.refused_by;
  if (r.state_store_unavailable) line["state_store"] = "unavailable";
  if (r.relay) {
    line["attempts"] = redacted_attempts(r.attempts ? *r.attempts : json::array());
    line["retries"] = r.relay->retries();
    line["stop_reason"] = stop_reason_label(*r.relay);
    if (const Attempt* sent = r.relay->accepted()) {
      line["provider"] = sent->provider;
      if (!sent->result.message_id.empty()) line["provider_message_id"] = sent->result.message_id;
    }
  }
  if (r.email) {
    line["recipients"] = r.email->recipient_count();
    std::set<std::string> domains;
    json hashes = json::array();
    for (const auto* list : {&r.email->to, &r.email->cc, &r.email->bcc}) {
      for (const auto& a : *list) {
        const std::string domain = ascii_lower(a.email.substr(a.email.rfind('@') + 1));
        domains.insert(domain);
        if (!recipient_key_.empty()) hashes.push_back(hash_address(recipient_key_, a.email));
      }
    }
    line["recipient_domains"] = domains;
    if (r.email->sandbox) line["sandbox"] = true;
    if (!recipient_key_.empty()) line["recipient_hashes"] = std::move(hashes);
  }
  return line;
}

bool AuditLog::request(const RequestRecord& record) { return write(request_json(record)); }

bool AuditLog::control(const ControlRecord& r) {
  json line{{"ts", timestamp()},       {"event", "control"},
            {"request_id", r.request_id}, {"client_ip", r.client_ip},
            {"client", r.client ? json(*r.client) : json(nullptr)}, {"action", r.action}};
  if (!r.provider.empty()) line["provider"] = r.provider;
  if (r.action == "set_order") line["order"] = r.order;
  if (!r.recipient.empty()) {
    line["recipient_domain"] = ascii_lower(r.recipient.substr(r.recipient.rfind('@') + 1));
    line["recipient_hash"] = recipient_key_.empty() ? json(nullptr) : json(hash_address(recipient_key_, r.recipient));
  }
  line["reason"] = r.reason.empty() ? json(nullptr) : json(redact_addresses(r.reason));
  return write(line);
}

// Its own fields, apart from the forwarded payload (DeliveryEvent::to_json, an external API that
// may change on its own).
bool AuditLog::delivery(const DeliveryEvent& event, bool suppressed) {
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  const bool has_address = event.recipient.find('@') != std::string::npos;
  const std::string hash = recipient_hash(event.recipient);
  return write(json{{"ts", timestamp()},
                    {"event", "delivery"},
                    {"provider", event.provider},
                    {"type", event.type},
                    {"bounce_class", or_null(event.bounce_class)},
                    {"request_id", or_null(event.request_id)},
                    {"provider_message_id", or_null(event.provider_message_id)},
                    {"provider_event_id", or_null(event.provider_event_id)},
                    {"recipient_domain", or_null(has_address ? ascii_lower(event.recipient.substr(event.recipient.rfind('@') + 1)) : "")},
                    {"recipient_hash", or_null(hash)},
                    {"reason", or_null(redact_addresses(event.reason))},
                    {"occurred_at", or_null(event.occurred_at)},
                    {"suppressed", suppressed}});
}

std::string AuditLog::reopen() { return sink_->reopen(); }

bool AuditLog::healthy() {
  if (!failing_) return true;
  if (!sink_->probe()) return false;
  failing_ = false;  // until the next line fails
  return true;
}

AuditCounters AuditLog::counters() const {
  AuditCounters c = sink_->counters();
  c.write_errors = write_errors_;
  return c;
}

}  // namespace mailrelay
