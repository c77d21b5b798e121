// A driver of the front door's parser (request_framing.h) as FrontDoor reads a connection, for the
// framing unit tests and the framing fuzzer: the same bytes fed whole or in two reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "request_framing.h"

namespace fakes {

struct Framed {
  int verdict = 0;  // 0: needs more, 1: a whole request, 2: refused
  int status = 0;   // refused: 400, 413 or 414
  std::size_t end = 0;  // whole: where the request ends (what follows is the next one)
  std::string body;     // whole: its body, decoded
  mailrelay::RequestHead head;
  bool operator==(const Framed& o) const { return verdict == o.verdict && status == o.status && end == o.end && body == o.body; }
};

// `data` as it arrives in two reads, data[0, split) then the rest; heads up to `max_head`,
// bodies up to `max_body`.
inline Framed frame(const std::string& data, std::size_t split, std::size_t max_head = 64 * 1024,
                    std::uint64_t max_body = 1 << 16) {
  using mailrelay::ChunkedDecoder;
  Framed out;
  std::string in;
  std::size_t skipped = 0;
  mailrelay::HeadScan scan;
  std::size_t head_end = 0;
  ChunkedDecoder chunks;
  std::size_t body_at = 0;
  auto refused = [&out](int status) {
    out.verdict = 2;
    out.status = status;
    return out;
  };
  for (const std::size_t upto : {split, data.size()}) {
    in.assign(data, 0, upto);
    if (head_end == 0) {
      if (scan.line_start == 0) {
        if (const std::size_t more = mailrelay::leading_empty_lines(in.substr(skipped))) {
          skipped += more;
          scan = {};
        }
      }
      const std::string view = in.substr(skipped);
      mailrelay::FramingError error;
      const auto end = mailrelay::find_head_end(view, scan, max_head, error);
      if (!end) return refused(error.status);
      if (*end == 0) continue;
      if (*end > view.size()) std::abort();
      if (!mailrelay::parse_head(std::string_view(view).substr(0, *end), out.head, error)) return refused(error.status);
      head_end = skipped + *end;
      body_at = head_end;
      if (!out.head.has_body()) {
        out.verdict = 1;
        out.end = head_end;
        return out;
      }
      if (!out.head.chunked && *out.head.content_length > max_body) return refused(413);
    }
    if (!out.head.chunked) {
      const auto length = static_cast<std::size_t>(*out.head.content_length);
      if (in.size() - head_end < length) continue;
      out.verdict = 1;
      out.end = head_end + length;
      out.body = in.substr(head_end, length);
      return out;
    }
    const ChunkedDecoder::Result r = chunks.feed(in, body_at, out.body, max_body);
    if (body_at > in.size() || out.body.size() > max_body) std::abort();
    if (r == ChunkedDecoder::Result::kError) return refused(chunks.error().status);
    if (r == ChunkedDecoder::Result::kDone) {
      out.verdict = 1;
      out.end = body_at;
      return out;
    }
  }
  return out;
}

inline Framed frame(const std::string& data) { return frame(data, data.size()); }

}  // namespace fakes
