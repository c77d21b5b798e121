#include "audit_log.h"

#include <openssl/evp.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <set>

#include <spdlog/details/file_helper.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace mailrelay {

using json = nlohmann::ordered_json;  // keys stay in the order written: ts, event, request_id, ...

// A file sink that can reopen its file by name (spdlog 1.10's file sinks cannot) and rotate by
// size. Every line is written and flushed to the kernel under the sink's mutex before log()
// returns: a line is never torn, and it is in the file before the answer it describes is sent.
class AuditLog::Sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  Sink(std::string path, std::uint64_t max_bytes, int max_files)
      : path_(std::move(path)), max_bytes_(max_bytes), max_files_(max_files) {
    file_.open(path_, false);
  }

  void reopen() {
    std::lock_guard<std::mutex> lock(mutex_);
    file_.reopen(false);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    if (max_bytes_ > 0 && file_.size() > 0 && file_.size() + line.size() > max_bytes_) rotate();
    file_.write(line);
    file_.flush();
  }
  void flush_() override { file_.flush(); }

 private:
  // path.N-1 -> path.N, ..., path -> path.1, then a fresh path. With max_files 0 the file just
  // starts over.
  void rotate() {
    file_.close();
    if (max_files_ > 0) {
      std::remove((path_ + "." + std::to_string(max_files_)).c_str());
      for (int i = max_files_ - 1; i >= 1; --i) {
        std::rename((path_ + "." + std::to_string(i)).c_str(), (path_ + "." + std::to_string(i + 1)).c_str());
      }
      std::rename(path_.c_str(), (path_ + ".1").c_str());
    }
    file_.open(path_, true);
  }

  std::string path_;
  std::uint64_t max_bytes_;
  int max_files_;
  spdlog::details::file_helper file_;
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
  std::shared_ptr<Sink> file_sink;
  std::shared_ptr<spdlog::sinks::sink> sink;
  try {
    if (settings.path == "-") {
      sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    } else {
      file_sink = std::make_shared<Sink>(settings.path, settings.max_bytes, settings.max_files);
      sink = file_sink;
    }
  } catch (const spdlog::spdlog_ex& e) {
    return Error{"config", std::string("cannot open --audit-log: ") + e.what(), ""};
  }
  // Injected, never registered in spdlog's global registry.
  auto logger = std::make_shared<spdlog::logger>("audit", sink);
  logger->set_pattern("%v");
  logger->flush_on(spdlog::level::trace);
  logger->set_error_handler([&ops_log](const std::string& message) { ops_log.error("audit log: {}", message); });
  return std::unique_ptr<AuditLog>(new AuditLog(file_sink, logger, settings.recipient_key, clock));
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
