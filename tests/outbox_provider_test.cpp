#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/stat.h>

#include <cstdlib>

#include "email.h"
#include "fake_clock.h"
#include "outbox_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

namespace {
std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  return out;
}

// Runs a check on the .eml at `path` with an independent parser: Python's email package. The
// script gets the path as argv[1]; 0 when it passed.
void check_with_python(const fakes::TempDir& dir, const std::string& path, const std::string& script_text) {
  std::string script = dir.file("check.py");
  fakes::write_file(script, script_text);
  std::string cmd = "python3 " + script + " " + path + " > " + dir.file("out.txt") + " 2>&1";
  int rc = std::system(cmd.c_str());
  INFO(fakes::read_file(dir.file("out.txt")));
  CHECK(rc == 0);
}
}  // namespace

TEST_CASE("outbox writes a complete .eml that Python's email parser accepts", "[outbox]") {
  fakes::TempDir dir;
  fakes::FakeClock clock;
  OutboxProvider outbox(dir.path(), clock);
  json j = fakes::sample_request();
  j["subject"] = "Invoice ✓ for Zoë";
  j["to"][1] = {{"email", "bob@example.org"}, {"name", "Doe, Bob"}};
  j["cc"] = {"carol@example.org"};
  j["text"] = "Hello\nsecond line with = sign and ünïcode\n.dot line";
  j["headers"] = {{"X-Campaign", "nov"}};
  j["attachments"] = {{{"filename", "report ü.pdf"}, {"content_type", "application/pdf"}, {"content", "JVBERi0xLjQK"}}};
  Email email = parse_email(j.dump()).value();

  AttemptResult r = outbox.send(email, "req-1", std::chrono::milliseconds(1000));
  REQUIRE(r.outcome == AttemptOutcome::kSent);
  CHECK(r.message_id == "<req-1-1@example.com>");
  auto files = list_dir(dir.path());
  REQUIRE(files.size() == 1);  // no temporary file left behind
  CHECK_THAT(files[0], Catch::EndsWith("-req-1-1.eml"));
  std::string path = dir.file(files[0]);
  std::string raw = fakes::read_file(path);
  for (char c : raw) REQUIRE(static_cast<unsigned char>(c) < 128);  // 7-bit clean

  check_with_python(dir, path, R"PY(
import sys, email
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
assert not m.defects, m.defects
assert str(m['Subject']) == 'Invoice ✓ for Zoë', m['Subject']
assert [a.addr_spec for a in m['To'].addresses] == ['alice@example.org', 'bob@example.org']
assert m['To'].addresses[1].display_name == 'Doe, Bob'
assert str(m['Cc']) == 'carol@example.org'
assert m['X-Campaign'] == 'nov'
assert m['Message-ID'] == '<req-1-1@example.com>'
assert m.get_content_type() == 'multipart/mixed'
body = m.get_body(preferencelist=('plain',))
assert body.get_content() == 'Hello\nsecond line with = sign and ünïcode\n.dot line\n' or body.get_content() == 'Hello\nsecond line with = sign and ünïcode\n.dot line', repr(body.get_content())
assert m.get_body(preferencelist=('html',)).get_content().strip() == '<p>html body</p>'
atts = list(m.iter_attachments())
assert len(atts) == 1 and atts[0].get_filename() == 'report ü.pdf', atts
assert atts[0].get_content() == b'%PDF-1.4\n'
for part in m.walk():
    assert not part.defects, part.defects
print('ok')
)PY");
}

TEST_CASE("outbox: inline images sit in multipart/related with their Content-ID, sandbox is marked", "[outbox]") {
  fakes::TempDir dir;
  fakes::FakeClock clock;
  OutboxProvider outbox(dir.path(), clock);
  json j = fakes::sample_request();
  j["html"] = "<p><img src=\"cid:logo\"></p>";
  j["attachments"] = {{{"filename", "logo.png"}, {"content_type", "image/png"}, {"content", "iVBORw0K"},
                       {"disposition", "inline"}, {"content_id", "logo"}},
                      {{"filename", "a.pdf"}, {"content_type", "application/pdf"}, {"content", "JVBERi0xLjQK"}}};
  j["sandbox"] = true;
  REQUIRE(outbox.supports_sandbox());
  REQUIRE(outbox.send(parse_email(j.dump()).value(), "req-3", std::chrono::milliseconds(1000)).outcome ==
          AttemptOutcome::kSent);
  auto files = list_dir(dir.path());
  REQUIRE(files.size() == 1);
  std::string path = dir.file(files[0]);
  // RFC 2387: the related part's root is the text/html alternative, the image beside it.
  check_with_python(dir, path, R"PY(
import sys, email
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
for part in m.walk():
    assert not part.defects, part.defects
assert m['X-Mailrelay-Sandbox'] == 'true'
assert m.get_content_type() == 'multipart/mixed'
related = m.get_payload()[0]
assert related.get_content_type() == 'multipart/related', related.get_content_type()
assert related.get_param('type') == 'multipart/alternative', related.get_param('type')
root, image = related.get_payload()
assert root.get_content_type() == 'multipart/alternative'
assert image['Content-ID'] == '<logo>' and image.get_content_disposition() == 'inline'
assert image.get_content() == bytes.fromhex('89504e470d0a')
assert [a.get_filename() for a in m.iter_attachments()] == ['a.pdf']
print('ok')
)PY");
}

TEST_CASE("outbox: a text-only message is a single part and each attempt gets its own file", "[outbox]") {
  fakes::TempDir dir;
  fakes::FakeClock clock;
  OutboxProvider outbox(dir.path(), clock);
  json j = fakes::sample_request();
  j.erase("html");
  Email email = parse_email(j.dump()).value();
  REQUIRE(outbox.send(email, "same", std::chrono::milliseconds(1)).outcome == AttemptOutcome::kSent);
  REQUIRE(outbox.send(email, "same", std::chrono::milliseconds(1)).outcome == AttemptOutcome::kSent);
  auto files = list_dir(dir.path());
  REQUIRE(files.size() == 2);
  std::string raw = fakes::read_file(dir.file(files[0]));
  CHECK_THAT(raw, Catch::Contains("Content-Type: text/plain; charset=utf-8\r\n"));
  CHECK_THAT(raw, !Catch::Contains("multipart"));
}

TEST_CASE("outbox reports an unwritable directory as an error, not a send", "[outbox]") {
  fakes::FakeClock clock;
  OutboxProvider outbox("/nonexistent/mailrelay-outbox", clock);
  Email email = parse_email(fakes::sample_request().dump()).value();
  AttemptResult r = outbox.send(email, "x", std::chrono::milliseconds(1));
  CHECK(r.outcome == AttemptOutcome::kError);
  CHECK_THAT(r.error, Catch::Contains("outbox directory"));
  CHECK_FALSE(r.may_have_been_sent);
}
