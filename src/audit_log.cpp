#include "audit_log.h"

#include <openssl/evp.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <set>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <atomic>
#include <shared_mutex>
#include <cstring>

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>

namespace mailrelay {

using json = nlohmann::ordered_json;  // keys stay in the order written: ts, event, request_id, ...

// The audit sink: the file (or stdout) with reopen by name (spdlog 1.10's file sinks cannot)
// and rotation by size. Each line goes out with one write(2) on an O_APPEND descriptor before
// log() returns, so it is in the file before the answer it describes is sent. Writers share a
// read lock and never wait for each other (the kernel appends whole writes without interleaving
// them); only rotation and reopen take the lock exclusively. No thread waits on another's I/O.
class AuditLog::Sink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  // `path` "-" is stdout (no rotation; reopen does nothing).
  Sink(std::string path, std::uint64_t max_bytes, int max_files)
      : path_(std::move(path)), max_bytes_(max_bytes), max_files_(max_files) {
    if (path_ == "-") {
      fd_ = STDOUT_FILENO;
      max_bytes_ = 0;
    } else {
      open_file();
      if (fd_ < 0) throw spdlog::spdlog_ex("cannot open " + path_ + ": " + std::strerror(errno));
    }
  }
  ~Sink() override {
    if (fd_ > STDOUT_FILENO) ::close(fd_);
  }

  void reopen() {
    if (path_ == "-") return;
    std::unique_lock<std::shared_mutex> lock(file_mutex_);
    if (fd_ >= 0) ::close(fd_);
    open_file();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    thread_local std::string line;
    line.assign(msg.payload.data(), msg.payload.size());
    line.push_back('\n');
    const std::uint64_t length = line.size();
    for (;;) {
      {
        std::shared_lock<std::shared_mutex> lock(file_mutex_);
        // The bytes are reserved before they are written, so concurrent writers never take the
        // file past max_bytes together.
        const std::uint64_t before = size_.fetch_add(length);
        if (max_bytes_ == 0 || before == 0 || before + length <= max_bytes_) {
          ssize_t n;
          do {
            n = ::write(fd_, line.data(), line.size());
          } while (n < 0 && errno == EINTR);
          if (n == static_cast<ssize_t>(length)) return;
          size_ -= length - static_cast<std::uint64_t>(std::max<ssize_t>(n, 0));
          // To the logger's error handler, which tells the operational log (a full disk, say).
          throw spdlog::spdlog_ex("cannot write " + path_, errno);
        }
        size_ -= length;
      }
      std::unique_lock<std::shared_mutex> lock(file_mutex_);
      if (size_ > 0 && size_ + length > max_bytes_) rotate();  // unless another writer just did
    }
  }
  void flush_() override {}  // nothing is buffered

 private:
  void open_file() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    struct stat st {};
    size_ = fd_ >= 0 && ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }

  // path.N-1 -> path.N, ..., path -> path.1, then a fresh path. With max_files 0 the file just
  // starts over. Under the exclusive lock.
  void rotate() {
    ::close(fd_);
    if (max_files_ > 0) {
      std::remove((path_ + "." + std::to_string(max_files_)).c_str());
      for (int i = max_files_ - 1; i >= 1; --i) {
        std::rename((path_ + "." + std::to_string(i)).c_str(), (path_ + "." + std::to_string(i + 1)).c_str());
      }
      std::rename(path_.c_str(), (path_ + ".1").c_str());
    } else {
      ::unlink(path_.c_str());
    }
    open_file();
  }

  std::string path_;
  std::uint64_t max_bytes_;
  int max_files_;
  std::shared_mutex file_mutex_;  // shared: writing a line; exclusive: swapping the descriptor
  int fd_ = -1;
  std::atomic<std::uint64_t> size_{0};
};

std::string hash_address(std::string_view key, std::string_view address) {
  std::string lowered(address);
  for (auto& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t mac_len = 0;
  EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
            reinterpret_cast<const unsigned char*>(lowered.data()), lowered.size(), mac, sizeof mac, &mac_len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < 16 && i < mac_len; ++i) {
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 15];
  }
  return out;
}

std::string redact_addresses(std::string_view text) {
  auto local_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-/=?^_`{|}~.").find(c) != std::string_view::npos;
  };
  auto domain_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'; };
  std::string out;
  std::size_t copied = 0;
  for (std::size_t at = text.find('@'); at != std::string_view::npos; at = text.find('@', at + 1)) {
    std::size_t begin = at, end = at + 1;
    while (begin > copied && local_char(text[begin - 1])) --begin;
    while (end < text.size() && domain_char(text[end])) ++end;
    if (begin == at || end == at + 1) continue;
    out.append(text.substr(copied, begin - copied));
    out += "<address>";
    copied = end;
    at = end - 1;
  }
  out.append(text.substr(copied));
  return out;
}

Result<std::unique_ptr<AuditLog>> AuditLog::open(const AuditSettings& settings, Clock& clock,
                                                 spdlog::logger& ops_log) {
  std::shared_ptr<Sink> sink;
  try {
    sink = std::make_shared<Sink>(settings.path, settings.max_bytes, settings.max_files);
  } catch (const spdlog::spdlog_ex& e) {
    return Error{"config", std::string("cannot open --audit-log: ") + e.what(), ""};
  }
  // Injected, never registered in spdlog's global registry.
  auto logger = std::make_shared<spdlog::logger>("audit", sink);
  logger->set_error_handler([&ops_log](const std::string& message) { ops_log.error("audit log: {}", message); });
  return std::unique_ptr<AuditLog>(new AuditLog(sink, logger, settings.recipient_key, clock));
}

AuditLog::AuditLog(std::shared_ptr<Sink> sink, std::shared_ptr<spdlog::logger> logger, std::string key, Clock& clock)
    : sink_(std::move(sink)), logger_(std::move(logger)), recipient_key_(std::move(key)), clock_(clock) {}

std::string AuditLog::timestamp() const {
  auto now = clock_.wall_now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

void AuditLog::write(const json& line) {
  logger_->info("{}", line.dump(-1, ' ', false, json::error_handler_t::replace));
}

void AuditLog::before_attempt(const std::string& request_id, const std::string& provider, int try_number) {
  write(json{{"ts", timestamp()}, {"event", "attempt"}, {"request_id", request_id},
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
  if (!r.replay_of.empty()) line["replay_of"] = r.replay_of;
  if (!r.refused_by.empty()) line["refused_by"] = r.refused_by;
  if (r.relay) {
    json attempts = attempts_to_json(*r.relay);
    for (auto& a : attempts) {
      if (a.contains("error")) a["error"] = redact_addresses(a["error"].get<std::string>());
    }
    line["attempts"] = std::move(attempts);
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
        std::string domain = a.email.substr(a.email.rfind('@') + 1);
        for (auto& c : domain) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        domains.insert(domain);
        if (!recipient_key_.empty()) hashes.push_back(hash_address(recipient_key_, a.email));
      }
    }
    line["recipient_domains"] = domains;
    if (!recipient_key_.empty()) line["recipient_hashes"] = std::move(hashes);
  }
  return line;
}

void AuditLog::request(const RequestRecord& record) { write(request_json(record)); }

void AuditLog::reopen() {
  if (sink_) sink_->reopen();
}

void AuditLog::flush() { logger_->flush(); }

}  // namespace mailrelay
