#include <catch2/catch.hpp>

#include <functional>

#include "email.h"
#include "mailgun_provider.h"
#include "sendgrid_provider.h"
#include "test_helpers.h"

using namespace mailrelay;
using nlohmann::json;

namespace {
// The default deployment: SendGrid, then Mailgun.
MessageLimits sendgrid_and_mailgun() {
  return MessageLimits::relay()
      .tighten(SendGridProvider("https://sg", "k").limits())
      .tighten(MailgunProvider("https://mg", "mg.example.com", "k").limits());
}
Result<Email> parse(const json& j) { return parse_email(j.dump(), sendgrid_and_mailgun()); }
}  // namespace

TEST_CASE("a full request parses into an Email", "[email]") {
  json j = fakes::sample_request();
  j["cc"] = {"carol@example.org"};
  j["bcc"] = {{{"email", "dave@example.org"}}};
  j["reply_to"] = "support@example.com";
  j["headers"] = {{"X-Campaign", "nov"}};
  j["attachments"] = {{{"filename", "a.pdf"}, {"content_type", "application/pdf"}, {"content", "JVBERi0x"}}};
  j["tags"] = {"invoice"};
  j["metadata"] = {{"invoice_id", "42"}, {"count", 3}, {"paid", true}};
  auto r = parse(j);
  REQUIRE(r);
  const Email& e = r.value();
  CHECK(e.from.email == "billing@example.com");
  CHECK(e.from.name == "Billing");
  REQUIRE(e.to.size() == 2);
  CHECK(e.to[1].name == "Bob");
  CHECK(e.cc[0].email == "carol@example.org");
  CHECK(e.bcc[0].email == "dave@example.org");
  CHECK(e.reply_to->email == "support@example.com");
  CHECK(e.headers == std::vector<std::pair<std::string, std::string>>{{"X-Campaign", "nov"}});
  CHECK(e.attachments[0].content == "%PDF-1");
  CHECK(e.tags == std::vector<std::string>{"invoice"});
  // Objects keep nlohmann's (sorted) key order; numbers and booleans become their JSON text.
  CHECK(e.metadata == std::vector<std::pair<std::string, std::string>>{{"count", "3"}, {"invoice_id", "42"}, {"paid", "true"}});
  CHECK(e.recipient_count() == 4);
}

TEST_CASE("address forms", "[email]") {
  auto [text, email, name] = GENERATE(table<std::string, std::string, std::string>({
      {"a@b", "a@b", ""},
      {"  a.b+tag@example.co.uk ", "a.b+tag@example.co.uk", ""},
      {"Name <a@example.com>", "a@example.com", "Name"},
      {"\"Doe, John\" <john@example.com>", "john@example.com", "Doe, John"},
      {"\"Say \\\"hi\\\"\" <x@example.com>", "x@example.com", "Say \"hi\""},
      {"Zoë Ünicode <z@example.com>", "z@example.com", "Zoë Ünicode"},
      {"<bare@example.com>", "bare@example.com", ""}}));
  auto a = parse_address(text, "to[0]");
  REQUIRE(a);
  CHECK(a.value().email == email);
  CHECK(a.value().name == name);
}

TEST_CASE("RFC 5321 lengths: 64 for the local part, 254 in all", "[email]") {
  std::string local64(64, 'a'), local65(65, 'a');
  CHECK(is_valid_addr_spec(local64 + "@example.com"));
  CHECK_FALSE(is_valid_addr_spec(local65 + "@example.com"));
  std::string label(63, 'd');
  std::string domain = label + "." + label + "." + label + "." + std::string(60, 'd');  // 252 characters
  REQUIRE(domain.size() == 252);
  CHECK(is_valid_addr_spec("a@" + domain));        // 254 in all
  CHECK_FALSE(is_valid_addr_spec("ab@" + domain));  // 255
  CHECK_FALSE(is_valid_addr_spec("a@" + label + "d.example.com"));  // a 64-character label
}

TEST_CASE("validation turns bad requests away with the field to blame", "[email]") {
  using Mutate = std::function<void(json&)>;
  struct Row {
    const char* what;
    Mutate mutate;
    const char* field;
    const char* message;
  };
  std::string too_long_local = std::string(65, 'x') + "@example.com";
  std::vector<Row> rows = {
      {"missing from", [](json& j) { j.erase("from"); }, "from", "is required"},
      {"missing to", [](json& j) { j.erase("to"); }, "to", "at least one \"to\""},
      {"bcc only", [](json& j) { j.erase("to"); j["bcc"] = {"x@example.org"}; }, "to", "at least one \"to\""},
      {"missing subject", [](json& j) { j.erase("subject"); }, "subject", "is required"},
      {"empty subject", [](json& j) { j["subject"] = ""; }, "subject", "must not be empty"},
      {"no body", [](json& j) { j.erase("text"); j.erase("html"); }, "text", "at least one of"},
      {"empty bodies", [](json& j) { j["text"] = ""; j["html"] = ""; }, "text", "at least one of"},
      {"to not an array", [](json& j) { j["to"] = "alice@example.org"; }, "to", "must be an array"},
      {"number as address", [](json& j) { j["to"][1] = 42; }, "to[1]", "must be an address"},
      {"invalid address", [](json& j) { j["to"][1] = "not-an-address"; }, "to[1]", "not a valid email"},
      {"object without email", [](json& j) { j["to"][1] = {{"name", "Bob"}}; }, "to[1].email", "is required"},
      {"object bad email", [](json& j) { j["to"][1] = {{"email", "bob@"}}; }, "to[1].email", "not a valid"},
      {"object unknown key", [](json& j) { j["to"][0] = {{"email", "a@b.c"}, {"mail", "x"}}; }, "to[0].mail", "unknown field"},
      {"local part over 64", [&](json& j) { j["to"][0] = too_long_local; }, "to[0]", "at most 64"},
      {"non-ASCII address", [](json& j) { j["to"][0] = "jos\u00e9@example.org"; }, "to[0]", "only ASCII addresses"},
      {"non-ASCII domain", [](json& j) { j["to"][0] = "a@b\u00fccher.example"; }, "to[0]", "give a domain as xn--"},
      {"CRLF in subject", [](json& j) { j["subject"] = "Hi\r\nBcc: victim@example.com"; }, "subject", "CR, LF"},
      {"LF in subject", [](json& j) { j["subject"] = "Hi\nthere"; }, "subject", "CR, LF"},
      {"NUL in subject", [](json& j) { j["subject"] = std::string("Hi\0there", 8); }, "subject", "CR, LF"},
      {"CRLF in display name", [](json& j) { j["to"][1] = {{"email", "b@example.org"}, {"name", "B\r\nBcc: x@y.z"}}; }, "to[1].name", "CR, LF"},
      {"CRLF in name string", [](json& j) { j["from"] = "Evil\r\nBcc: x@y.z <a@example.com>"; }, "from", "CR, LF"},
      {"CRLF in header value", [](json& j) { j["headers"] = {{"X-A", "v\r\nBcc: x@y.z"}}; }, "headers.X-A", "CR, LF"},
      {"space in header name", [](json& j) { j["headers"] = {{"X A", "v"}}; }, "headers.X A", "not a valid header name"},
      {"colon in header name", [](json& j) { j["headers"] = {{"X-A:", "v"}}; }, "headers.X-A:", "not a valid header name"},
      {"CRLF in header name", [](json& j) { j["headers"] = {{"X-A\r\nBcc", "v"}}; }, "headers.X-A\r\nBcc", "not a valid header name"},
      {"override To", [](json& j) { j["headers"] = {{"to", "x@y.z"}}; }, "headers.to", "cannot be overridden"},
      {"override From", [](json& j) { j["headers"] = {{"From", "x@y.z"}}; }, "headers.From", "cannot be overridden"},
      {"override Subject", [](json& j) { j["headers"] = {{"SUBJECT", "x"}}; }, "headers.SUBJECT", "cannot be overridden"},
      {"override Content-Type", [](json& j) { j["headers"] = {{"Content-Type", "text/plain"}}; }, "headers.Content-Type", "cannot be overridden"},
      // Reserved by prefix (README "Hostile input"): header families providers or MTAs act on.
      {"Resent-Bcc", [](json& j) { j["headers"] = {{"Resent-Bcc", "x@y.z"}}; }, "headers.Resent-Bcc", "is reserved"},
      {"X-SES-CONFIGURATION-SET", [](json& j) { j["headers"] = {{"X-SES-CONFIGURATION-SET", "other"}}; }, "headers.X-SES-CONFIGURATION-SET", "is reserved"},
      {"x-ses-source-arn", [](json& j) { j["headers"] = {{"x-ses-source-arn", "arn:aws:ses:x"}}; }, "headers.x-ses-source-arn", "is reserved"},
      {"X-Mailrelay-Metadata-k", [](json& j) { j["headers"] = {{"X-Mailrelay-Metadata-k", "v"}}; }, "headers.X-Mailrelay-Metadata-k", "is reserved"},
      {"Content-ID", [](json& j) { j["headers"] = {{"Content-ID", "<x>"}}; }, "headers.Content-ID", "is reserved"},
      {"X-SMTPAPI", [](json& j) { j["headers"] = {{"X-SMTPAPI", "{}"}}; }, "headers.X-SMTPAPI", "is reserved"},
      {"X-Mailgun-Drop-Message", [](json& j) { j["headers"] = {{"X-Mailgun-Drop-Message", "yes"}}; }, "headers.X-Mailgun-Drop-Message", "is reserved"},
      {"X-PM-Message-Stream", [](json& j) { j["headers"] = {{"X-PM-Message-Stream", "broadcast"}}; }, "headers.X-PM-Message-Stream", "is reserved"},
      {"header value not string", [](json& j) { j["headers"] = {{"X-A", 1}}; }, "headers.X-A", "must be a string"},
      {"bad base64", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", "@@@"}}}; }, "attachments[0].content", "not valid base64"},
      {"unpadded base64", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", "Zg"}}}; }, "attachments[0].content", "not valid base64"},
      {"attachment without filename", [](json& j) { j["attachments"] = {{{"content", "Zg=="}}}; }, "attachments[0].filename", "is required"},
      {"CRLF in filename", [](json& j) { j["attachments"] = {{{"filename", "a\r\nb"}, {"content", "Zg=="}}}; }, "attachments[0].filename", "CR, LF"},
      {"bad content type", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", "Zg=="}, {"content_type", "pdf"}}}; }, "attachments[0].content_type", "MIME type"},
      // Limits of the configured providers together (README "Providers").
      {"four tags (Mailgun: up to 3)", [](json& j) { j["tags"] = {"a", "b", "c", "d"}; }, "tags", "at most 3"},
      {"a 129-character tag (Mailgun: 128)", [](json& j) { j["tags"] = {std::string(129, 't')}; }, "tags[0]", "1 to 128"},
      {"the request id key (README 'Delivery events and suppressions')", [](json& j) { j["metadata"] = {{"mailrelay_request_id", "x"}}; }, "metadata.mailrelay_request_id", "set by the relay"},
      {"metadata of 10,000 bytes (Mailgun truncates over 4KB)", [](json& j) { j["metadata"] = {{"k", std::string(9990, 'v')}}; }, "metadata", "at most 3756"},
      {"headers over Mailgun's 16KB of options", [](json& j) {
         for (int i = 0; i < 20; ++i) j["headers"]["X-H" + std::to_string(i)] = std::string(900, 'h');
       }, "headers", "at most 16000"},
      {"an empty attachment (SendGrid: content minLength 1)", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", ""}}}; }, "attachments[0].content", "must not be empty"},
      {"inline without content_id", [](json& j) { j["attachments"] = {{{"filename", "a.png"}, {"content", "Zg=="}, {"disposition", "inline"}}}; }, "attachments[0].content_id", "is required"},
      {"content_id on a plain attachment", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", "Zg=="}, {"content_id", "x"}}}; }, "attachments[0].content_id", "only for"},
      {"content_id with a space", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", "Zg=="}, {"disposition", "inline"}, {"content_id", "a b"}}}; }, "attachments[0].content_id", "1 to 128"},
      {"a content_id used twice", [](json& j) {
         json inline_part = {{"filename", "a"}, {"content", "Zg=="}, {"disposition", "inline"}, {"content_id", "logo"}};
         j["attachments"] = {inline_part, inline_part};
       }, "attachments[1].content_id", "used by another"},
      {"unknown disposition", [](json& j) { j["attachments"] = {{{"filename", "a"}, {"content", "Zg=="}, {"disposition", "form-data"}}}; }, "attachments[0].disposition", "\"attachment\" or \"inline\""},
      {"sandbox not a boolean", [](json& j) { j["sandbox"] = "yes"; }, "sandbox", "true or false"},
      {"non-ASCII tag", [](json& j) { j["tags"] = {"é"}; }, "tags[0]", "printable ASCII"},
      {"nested metadata", [](json& j) { j["metadata"] = {{"k", {{"a", 1}}}}; }, "metadata.k", "string, number or boolean"},
      {"bad metadata key", [](json& j) { j["metadata"] = {{"a b", "1"}}; }, "metadata.a b", "key must be"},
      {"unknown top-level field", [](json& j) { j["attachements"] = json::array(); }, "attachements", "unknown field"},
      {"text not a string", [](json& j) { j["text"] = 5; }, "text", "must be a string"},
  };
  for (const auto& row : rows) {
    CAPTURE(row.what);
    json j = fakes::sample_request();
    row.mutate(j);
    auto r = parse(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == "invalid_request");
    CHECK(r.error().field == row.field);
    CHECK_THAT(r.error().message, Catch::Contains(row.message));
  }
}

TEST_CASE("more than 1000 recipients are refused, exactly 1000 are fine", "[email]") {
  json j = fakes::sample_request();
  json to = json::array();
  for (int i = 0; i < 600; ++i) to.push_back("to" + std::to_string(i) + "@example.org");
  json bcc = json::array();
  for (int i = 0; i < 400; ++i) bcc.push_back("bcc" + std::to_string(i) + "@example.org");
  j["to"] = to;
  j["bcc"] = bcc;
  REQUIRE(parse(j));
  j["bcc"].push_back("one-more@example.org");
  auto r = parse(j);
  REQUIRE_FALSE(r);
  CHECK(r.error().field == "bcc");
  CHECK_THAT(r.error().message, Catch::Contains("more than 1000"));
}

TEST_CASE("duplicate recipients are removed across to/cc/bcc, case-insensitively, first wins", "[email]") {
  json j = fakes::sample_request();
  j["to"] = {"Alice@Example.org", "bob@example.org", "ALICE@example.org"};
  j["cc"] = {"bob@EXAMPLE.org", "carol@example.org"};
  j["bcc"] = {"carol@example.org", "dave@example.org"};
  auto r = parse(j);
  REQUIRE(r);
  const Email& e = r.value();
  REQUIRE(e.to.size() == 2);
  CHECK(e.to[0].email == "Alice@Example.org");
  REQUIRE(e.cc.size() == 1);
  CHECK(e.cc[0].email == "carol@example.org");
  REQUIRE(e.bcc.size() == 1);
  CHECK(e.bcc[0].email == "dave@example.org");
}

TEST_CASE("bodies that are not a JSON object are refused", "[email]") {
  auto [body, message] = GENERATE(table<std::string, std::string>({
      {"", "not valid JSON"},
      {"{", "not valid JSON"},
      {"{\"from\": \"a@b\",}", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {"\"text\"", "must be a JSON object"},
      {"{\"subject\": \"\xff\xfe\"}", "not valid JSON"},        // invalid UTF-8
      {"{\"subject\": \"\\ud800\"}", "not valid JSON"},         // lone surrogate
      {"{\"from\": 6666666E66666666666666666}", "not valid JSON"},  // number overflow (fuzzer)
      {std::string(100000, '['), "nested deeper"},
      {"{\"to\": [[[[[[[[[[\"a@b\"]]]]]]]]]]}", "nested deeper"}}));
  auto r = parse_email(body);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == "invalid_request");
  CHECK_THAT(r.error().message, Catch::Contains(message));
}

TEST_CASE("limits: each boundary holds exactly, and only for the providers configured", "[email][limits]") {
  const MessageLimits both = sendgrid_and_mailgun();
  const MessageLimits outbox_only = MessageLimits::relay();
  json j = fakes::sample_request();
  SECTION("metadata: Mailgun's 4,000 bytes less the stamps (244) leave 3,756") {
    CHECK(request_id_stamp_size() == 244);
    // {"k": "<value>"}: 2 + (1 + n + 8) bytes
    j["metadata"] = {{"k", std::string(3756 - 11, 'v')}};
    CHECK(parse_email(j.dump(), both));
    j["metadata"] = {{"k", std::string(3756 - 10, 'v')}};
    CHECK_FALSE(parse_email(j.dump(), both));
    // SendGrid alone: custom_args less than 10,000 bytes, the stamp included.
    MessageLimits sendgrid = MessageLimits::relay().tighten(SendGridProvider("https://sg", "k").limits());
    j["metadata"] = {{"k", std::string(9999 - 244 - 11, 'v')}};
    CHECK(parse_email(j.dump(), sendgrid));
    j["metadata"] = {{"k", std::string(9999 - 244 - 10, 'v')}};
    CHECK_FALSE(parse_email(j.dump(), sendgrid));
    // JSON escapes count: a quote is two bytes as SendGrid and Mailgun receive it.
    CHECK(metadata_size({{"k", "\""}}) == metadata_size({{"k", "ab"}}));
  }
  SECTION("a tag given twice is one tag (SendGrid categories are uniqueItems)") {
    j["tags"] = {"invoice", "monthly", "invoice", "monthly", "eu"};
    auto e = parse_email(j.dump(), both);
    REQUIRE(e);
    CHECK(e.value().tags == std::vector<std::string>{"invoice", "monthly", "eu"});
  }
  SECTION("the outbox alone takes what the providers would not") {
    j["tags"] = {"a", "b", "c", "d", "e"};
    j["attachments"] = {{{"filename", "empty.txt"}, {"content", ""}}};
    j["metadata"] = {{"k", std::string(20000, 'v')}};
    CHECK(parse_email(j.dump(), outbox_only));
    CHECK_FALSE(parse_email(j.dump(), both));
  }
  SECTION("the limits say where each comes from") {
    json shown = both.to_json();
    CHECK(shown["limits"] == json::parse(R"({"recipients": 1000, "tags": 3, "tag_length": 128, "metadata_bytes": 4000,
                                              "options_bytes": 16000, "attachment_min_bytes": 1, "inline_attachments": null})"));
    CHECK(shown["sources"]["recipients"].size() == 3);  // the relay, SendGrid and Mailgun agree on 1000
    CHECK_THAT(shown["sources"]["tags"][0].get<std::string>(), Catch::StartsWith("mailgun: "));
    CHECK_THAT(shown["sources"]["attachment_min_bytes"][0].get<std::string>(), Catch::StartsWith("sendgrid: "));
    CHECK(outbox_only.to_json()["limits"]["tags"].is_null());
  }
}

TEST_CASE("email: headers near a reserved family are still the caller's", "[email]") {
  for (const char* name : {"X-Session", "X-Contentful", "X-Resentment", "X-Pmx", "X-Mailgunner"}) {
    json j = json::parse(R"({"from":"a@example.com","to":["b@example.org"],"subject":"s","text":"t"})");
    j["headers"] = {{name, "v"}};
    INFO(name);
    CHECK(parse_email(j.dump()));
  }
}
