#include <catch2/catch.hpp>

#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "audit_log.h"
#include "fake_clock.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

namespace {

// An audit log in a fresh directory, on a fake clock.
struct Fixture {
  fakes::TempDir dir;
  fakes::FakeClock clock;
  std::ostringstream ops_text;  // the operational log
  std::shared_ptr<spdlog::logger> ops =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(ops_text));
  AuditSettings settings;

  int ops_count(const std::string& text) {
    ops->flush();
    const std::string all = ops_text.str();
    int n = 0;
    for (auto at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++n;
    return n;
  }

  std::unique_ptr<AuditLog> open(std::uint64_t max_bytes, int max_files) {
    settings.path = dir.file("audit.log");
    settings.max_bytes = max_bytes;
    settings.max_files = max_files;
    return std::move(AuditLog::open(settings, clock, *ops)).value();
  }
};

// Parses every line of `path`; fails the test on a torn or partial line.
std::vector<json> lines_of(const std::string& path) {
  std::vector<json> out;
  std::string text = fakes::read_file(path);
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    json line = json::parse(text.substr(start, nl - start), nullptr, false);
    REQUIRE_FALSE(line.is_discarded());
    out.push_back(line);
  }
  REQUIRE(start == text.size());
  return out;
}

}  // namespace

TEST_CASE("recipient hashes are keyed HMAC-SHA256, case-insensitive, 32 hex characters", "[audit_log]") {
  // Reference: python3 -c "import hmac,hashlib; print(hmac.new(b'fake-recipient-key-0123456789',
  //            b'alice@example.org', hashlib.sha256).hexdigest()[:32])"
  CHECK(hash_address("fake-recipient-key-0123456789", "alice@example.org") == "9d8f9494450345ffd11829bc2cc6810b");
  CHECK(hash_address("fake-recipient-key-0123456789", "Alice@Example.ORG") == "9d8f9494450345ffd11829bc2cc6810b");
  CHECK(hash_address("another-fake-key-0123456789", "alice@example.org") != "9d8f9494450345ffd11829bc2cc6810b");
}

TEST_CASE("addresses in provider text are redacted", "[audit_log]") {
  auto [text, redacted] = GENERATE(table<std::string, std::string>({
      {"The to address alice@example.org is invalid", "The to address <address> is invalid"},
      {"a@b.c and x.y+z@mg.example.com!", "<address> and <address>!"},
      {"no address @ here", "no address @ here"},
      {"user@", "user@"},
      {"", ""}}));
  CHECK(redact_addresses(text) == redacted);
}

TEST_CASE("request line: keys, types, and no PII", "[audit_log]") {
  Fixture f;
  auto audit = f.open(0, 0);
  json j = fakes::sample_request();
  Email email = parse_email(j.dump()).value();
  RelayResult relay;
  relay.reason = StopReason::kAccepted;
  Attempt failed{"sendgrid", 1, {}, 12.34};
  failed.result.outcome = AttemptOutcome::kRejected;
  failed.result.http_status = 400;
  failed.result.error = "Invalid recipient bob@example.org";
  Attempt sent{"mailgun", 1, {}, 80};
  sent.result.outcome = AttemptOutcome::kSent;
  sent.result.http_status = 200;
  sent.result.message_id = "<1@mg.example.com>";
  relay.attempts = {failed, sent};
  RequestRecord record;
  record.request_id = "r-1";
  record.client_ip = "127.0.0.1";
  record.method = "POST";
  record.path = "/v1/send";
  record.status = 200;
  record.outcome = "sent";
  record.latency_ms = 95.04;
  record.email = &email;
  record.relay = &relay;
  const nlohmann::ordered_json attempts = attempts_to_json(relay);  // as the answer lists them
  record.attempts = &attempts;
  audit->request(record);

  auto lines = lines_of(f.dir.file("audit.log"));
  REQUIRE(lines.size() == 1);
  const json& l = lines[0];
  CHECK(l["event"] == "request");
  CHECK(l["ts"].get<std::string>().size() == 24);  // 2026-11-22T20:58:06.123Z
  CHECK(l["provider"] == "mailgun");
  CHECK(l["provider_message_id"] == "<1@mg.example.com>");
  CHECK(l["retries"] == 1);
  CHECK(l["latency_ms"] == 95.0);
  CHECK(l["recipients"] == 2);
  CHECK(l["recipient_domains"] == json::array({"example.org"}));
  CHECK_FALSE(l.contains("recipient_hashes"));  // no key configured
  CHECK(l["stop_reason"] == "accepted");
  CHECK(l["attempts"][0]["error"] == "Invalid recipient <address>");
  std::string raw = fakes::read_file(f.dir.file("audit.log"));
  CHECK(raw.find("alice@") == std::string::npos);
  CHECK(raw.find("bob@") == std::string::npos);
  CHECK(raw.find("Your invoice") == std::string::npos);
  CHECK(raw.find("plain body") == std::string::npos);
}

TEST_CASE("built-in rotation under concurrent writers: no line lost, torn or doubled", "[audit_log]") {
  Fixture f;
  auto audit = f.open(8192, 1000);  // keep everything, so every line can be counted
  constexpr int kThreads = 4, kPerThread = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) audit->before_attempt("t" + std::to_string(t) + "-" + std::to_string(i), "sendgrid", 1);
    });
  }
  for (auto& t : threads) t.join();

  std::multiset<std::string> ids;
  int files = 0;
  for (int n = 0; n <= 1000; ++n) {
    std::string path = n == 0 ? f.dir.file("audit.log") : f.dir.file("audit.log." + std::to_string(n));
    if (!std::ifstream(path).good()) break;
    ++files;
    // Writers reserve their bytes before writing, so a file stays within max_bytes, except that a
    // writer does not wait more than 50 ms for a rotation in progress (a request is never held
    // for the log): on a loaded machine each of the others may then put one line into the full
    // file. That bound, not the exact one, is what holds on any machine.
    CHECK(fakes::read_file(path).size() <= f.settings.max_bytes + (kThreads - 1) * 400);
    for (const auto& line : lines_of(path)) ids.insert(line["request_id"].get<std::string>());
  }
  CHECK(files > 10);
  CHECK(ids.size() == kThreads * kPerThread);
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == ids.size());
}

TEST_CASE("rotation keeps at most max_files old files", "[audit_log]") {
  Fixture f;
  auto audit = f.open(1000, 2);
  for (int i = 0; i < 200; ++i) audit->before_attempt("id-" + std::to_string(i), "mailgun", 1);
  CHECK(std::ifstream(f.dir.file("audit.log.1")).good());
  CHECK(std::ifstream(f.dir.file("audit.log.2")).good());
  CHECK_FALSE(std::ifstream(f.dir.file("audit.log.3")).good());
  auto newest = lines_of(f.dir.file("audit.log"));
  REQUIRE_FALSE(newest.empty());
  CHECK(newest.back()["request_id"] == "id-199");
}

TEST_CASE("reopen follows the file name after it was moved away", "[audit_log]") {
  Fixture f;
  auto audit = f.open(0, 0);
  audit->before_attempt("before", "sendgrid", 1);
  REQUIRE(std::rename(f.dir.file("audit.log").c_str(), f.dir.file("audit.log.moved").c_str()) == 0);
  audit->before_attempt("between", "sendgrid", 1);  // still goes to the moved file
  audit->reopen();
  audit->before_attempt("after", "sendgrid", 1);
  auto moved = lines_of(f.dir.file("audit.log.moved"));
  auto fresh = lines_of(f.dir.file("audit.log"));
  REQUIRE(moved.size() == 2);
  CHECK(moved[1]["request_id"] == "between");
  REQUIRE(fresh.size() == 1);
  CHECK(fresh[0]["request_id"] == "after");
}

TEST_CASE("an audit log that cannot be opened is a start-up error", "[audit_log]") {
  Fixture f;
  f.settings.path = "/proc/mailrelay-cannot-create/audit.log";
  auto audit = AuditLog::open(f.settings, f.clock, *f.ops);
  REQUIRE_FALSE(audit);
  CHECK_THAT(audit.error().message, Catch::Contains("--audit-log"));
}

TEST_CASE("rotation that cannot rename: one error per try, lines go on, retried after backoff", "[audit_log][faults]") {
  // The old sink retried the rename for every line, forever, holding every request (100 % CPU).
  Fixture f;
  auto audit = f.open(2000, 1);
  // A non-empty directory where the oldest rotated file must be removed: fails, for root too.
  REQUIRE(::mkdir(f.dir.file("audit.log.1").c_str(), 0755) == 0);
  REQUIRE(::mkdir(f.dir.file("audit.log.1/keep").c_str(), 0755) == 0);
  for (int i = 0; i < 500; ++i) CHECK(audit->before_attempt("blocked-" + std::to_string(i), "sendgrid", 1));
  CHECK(f.ops_count("rotation failed") == 1);  // once, not once per line
  CHECK(audit->counters().rotation_failures == 1);
  CHECK(audit->healthy());                      // lines are written: the log is not failing
  CHECK(lines_of(f.dir.file("audit.log")).size() == 500);  // all here, past max_bytes, whole
  // Fixed, and the backoff (1 s) over: the next line rotates.
  REQUIRE(std::remove(f.dir.file("audit.log.1/keep").c_str()) == 0);
  REQUIRE(std::remove(f.dir.file("audit.log.1").c_str()) == 0);
  f.clock.advance(std::chrono::milliseconds(1000));
  CHECK(audit->before_attempt("after", "sendgrid", 1));
  CHECK(lines_of(f.dir.file("audit.log.1")).size() == 500);
  auto fresh = lines_of(f.dir.file("audit.log"));
  REQUIRE(fresh.size() == 1);
  CHECK(fresh[0]["request_id"] == "after");
  CHECK(f.ops_count("rotation failed") == 1);
}

TEST_CASE("reopen onto a path that cannot be opened says so, keeps the old file, retries", "[audit_log][faults]") {
  // The old sink said "reopened", then lost every line with Bad file descriptor.
  Fixture f;
  auto audit = f.open(0, 0);
  CHECK(audit->before_attempt("before", "sendgrid", 1));
  REQUIRE(std::rename(f.dir.file("audit.log").c_str(), f.dir.file("audit.log.moved").c_str()) == 0);
  REQUIRE(::mkdir(f.dir.file("audit.log").c_str(), 0755) == 0);  // the log file replaced by a directory
  std::string why = audit->reopen();
  CHECK_THAT(why, Catch::Contains("audit.log"));
  CHECK(audit->counters().reopen_failures == 1);
  for (int i = 0; i < 100; ++i) CHECK(audit->before_attempt("while-" + std::to_string(i), "sendgrid", 1));
  CHECK(lines_of(f.dir.file("audit.log.moved")).size() == 101);  // nothing lost
  CHECK(audit->counters().reopen_failures == 1);  // not retried within the backoff
  REQUIRE(::rmdir(f.dir.file("audit.log").c_str()) == 0);
  f.clock.advance(std::chrono::milliseconds(1000));
  CHECK(audit->before_attempt("after", "sendgrid", 1));  // retried on its own
  auto fresh = lines_of(f.dir.file("audit.log"));
  REQUIRE(fresh.size() == 1);
  CHECK(fresh[0]["request_id"] == "after");
}

TEST_CASE("rotation in an immutable directory (chattr +i) fails loudly and loses nothing", "[audit_log][faults]") {
  Fixture f;
  auto audit = f.open(1000, 2);
  if (std::system(("chattr +i " + f.dir.path() + " 2>/dev/null").c_str()) != 0) {
    WARN("chattr +i is not possible here (not root, or no ext2/3/4): skipped");
    return;
  }
  for (int i = 0; i < 100; ++i) CHECK(audit->before_attempt("i-" + std::to_string(i), "sendgrid", 1));
  CHECK(audit->counters().rotation_failures == 1);
  CHECK(std::system(("chattr -i " + f.dir.path()).c_str()) == 0);
  CHECK(lines_of(f.dir.file("audit.log")).size() == 100);
}

TEST_CASE("disk full: no torn line in the file, the next line starts clean, readiness follows", "[audit_log][faults]") {
  fakes::SmallDisk mnt("64k");
  if (!mnt.mounted()) {
    WARN("cannot mount a tmpfs here (needs root): skipped");
    return;
  }
  Fixture f;
  f.settings.path = mnt.file("audit.log");
  f.settings.max_bytes = 0;
  auto audit = std::move(AuditLog::open(f.settings, f.clock, *f.ops)).value();
  int written = 0, failed = 0;
  for (int i = 0; i < 2000; ++i) {
    // Lines of varying length, so that one of them meets the end of the disk mid-line.
    if (audit->before_attempt("fill-" + std::to_string(i) + std::string(static_cast<std::size_t>(i % 37), 'x'), "sendgrid", 1)) {
      ++written;
    } else {
      ++failed;
    }
  }
  CHECK(failed > 0);
  CHECK(audit->counters().write_errors == static_cast<std::uint64_t>(failed));
  CHECK(f.ops_count("audit log: write failed") == failed);  // every lost line reached the operator
  CHECK_FALSE(audit->healthy());
  CHECK(lines_of(mnt.file("audit.log")).size() == static_cast<std::size_t>(written));  // every line parses
  // Room again: readiness comes back and the next line is whole.
  REQUIRE(::truncate(mnt.file("audit.log").c_str(), 0) == 0);
  CHECK(audit->healthy());
  CHECK(audit->before_attempt("after", "sendgrid", 1));
  auto after = lines_of(mnt.file("audit.log"));
  REQUIRE(after.size() == 1);
  CHECK(after[0]["request_id"] == "after");
}
