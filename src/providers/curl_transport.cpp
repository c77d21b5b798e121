#include "curl_transport.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <cctype>

#include "ascii.h"
#include "event_loop.h"

namespace mailrelay {
namespace {

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct MimeDeleter {
  void operator()(curl_mime* mime) const { curl_mime_free(mime); }
};

struct Sink {
  HttpResponse* response;
  std::size_t limit;
  bool overflow = false;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  size_t n = size * count;
  if (sink->response->body.size() + n > sink->limit) {
    sink->overflow = true;
    return 0;  // makes curl fail with CURLE_WRITE_ERROR
  }
  sink->response->body.append(data, n);
  return n;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* response = static_cast<HttpResponse*>(user);
  size_t n = size * count;
  std::string_view line(data, n);
  if (line.rfind("HTTP/", 0) == 0) {
    response->headers.clear();  // a new status line (after a 100 Continue): start over
    return n;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  const std::string name = ascii_lower(line.substr(0, colon));
  const std::string_view value = trim_space(line.substr(colon + 1));
  response->headers.emplace_back(std::move(name), std::string(value));
  return n;
}

// The request body is handed to libcurl through a read callback with no way to seek back.
// libcurl 7.88 re-sends a POST by itself when a reused connection dies before any answer
// ("Connection died, retrying a fresh connect"): the provider may then get the message twice
// while we saw one call. Without a way to rewind the body, libcurl cannot re-send and fails with
// CURLE_SEND_FAIL_REWIND instead, which we report as an ambiguous attempt: every transmission is
// an attempt the relay records. Connection reuse is unaffected; only that retry is given up.
struct BodyReader {
  const std::string* body;
  std::size_t offset = 0;
};

size_t read_body(char* buffer, size_t size, size_t count, void* user) {
  auto* reader = static_cast<BodyReader*>(user);
  size_t n = std::min(size * count, reader->body->size() - reader->offset);
  std::memcpy(buffer, reader->body->data() + reader->offset, n);
  reader->offset += n;
  return n;
}

// The same for multipart posts: one part that cannot be rewound once read makes the whole
// form impossible to re-send (curl rewinds every part before a retry). Seeking to the start
// before anything was read is the normal first send, and allowed.
size_t read_part(char* buffer, size_t size, size_t count, void* user) { return read_body(buffer, size, count, user); }

int seek_part(void* user, curl_off_t offset, int origin) {
  auto* reader = static_cast<BodyReader*>(user);
  if (origin == SEEK_SET && offset == 0 && reader->offset == 0) return CURL_SEEKFUNC_OK;
  return CURL_SEEKFUNC_CANTSEEK;
}

TransportError classify(CURLcode code, CURL* curl, bool overflow) {
  curl_off_t pretransfer = 0;
  curl_easy_getinfo(curl, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
  // pretransfer > 0: connect and TLS were done and the request started to go out.
  bool request_started = pretransfer > 0;
  TransportError e;
  e.message = curl_easy_strerror(code);
  e.may_have_been_sent = request_started;  // unless the failure says otherwise
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      e.kind = TransportFailure::kResolve;
      e.may_have_been_sent = false;
      break;
    case CURLE_COULDNT_CONNECT:
      e.kind = TransportFailure::kConnect;
      e.may_have_been_sent = false;
      break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      e.kind = TransportFailure::kTls;
      e.may_have_been_sent = false;
      break;
    case CURLE_OPERATION_TIMEDOUT:
      e.kind = TransportFailure::kTimeout;
      break;
    case CURLE_SEND_FAIL_REWIND:  // the connection died and libcurl wanted to re-send (see above)
      e.kind = TransportFailure::kConnectionLost;
      e.message = "connection lost after the request was sent; not re-sent";
      e.may_have_been_sent = true;
      break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      e.kind = TransportFailure::kConnectionLost;
      break;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:
      e.kind = TransportFailure::kProtocol;
      break;
    case CURLE_WRITE_ERROR:
      e.kind = overflow ? TransportFailure::kResponseTooLarge : TransportFailure::kOther;
      if (overflow) e.message = "provider response larger than the cap";
      e.may_have_been_sent = true;
      break;
    default:
      e.kind = TransportFailure::kOther;
      break;
  }
  return e;
}

// One libcurl multi handle per event loop, driven by the loop's epoll and a timer
// (https://curl.se/libcurl/c/curl_multi_socket_action.html, the "multi_socket" API): every
// transfer on the loop shares its connection cache (keep-alive to each provider; HTTP/2
// multiplexing where the provider offers it over TLS). A fiber adds its easy handle and is
// suspended until the transfer is done.
class LoopMulti {
 public:
  explicit LoopMulti(EventLoop& loop) : loop_(loop), multi_(curl_multi_init()) {
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
    // Idle connections kept for reuse: more than the transfers it takes (see of()).
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, 512L);
  }
  ~LoopMulti() { curl_multi_cleanup(multi_); }

  // One of the calling fiber's loop's multi handles: created on demand, they live as long as the
  // thread. The first with fewer than kShare transfers running takes the next one, so a quiet
  // loop uses one cache (the warmest connection), and a busy one spreads its transfers over
  // several: libcurl looks for a connection to reuse by walking every connection it holds to the
  // host (libcurl 7.88, conncache.c), and with thousands of sends in flight on one cache that walk
  // became a large part of a send's cost.
  static LoopMulti& of(EventLoop& loop) {
    constexpr std::size_t kShare = 256;
    constexpr std::size_t kMost = 16;
    thread_local std::vector<std::unique_ptr<LoopMulti>> mine;
    LoopMulti* least = nullptr;
    for (auto& m : mine) {
      if (m->running_ < kShare) return *m;
      if (!least || m->running_ < least->running_) least = m.get();
    }
    if (mine.size() < kMost) {
      mine.push_back(std::make_unique<LoopMulti>(loop));
      return *mine.back();
    }
    return *least;
  }

  CURLcode perform(CURL* curl) {
    Transfer t{current_fiber(), CURLE_OK, false};
    curl_easy_setopt(curl, CURLOPT_PRIVATE, &t);
    CURLMcode added = curl_multi_add_handle(multi_, curl);
    if (added != CURLM_OK) return CURLE_FAILED_INIT;
    ++running_;
    while (!t.done) suspend();  // resumed by act()
    --running_;
    return t.code;
  }

 private:
  struct Transfer {
    Fiber* fiber;
    CURLcode code;
    bool done;
  };

  static int on_socket(CURL*, curl_socket_t s, int what, void* self, void*) {
    auto* m = static_cast<LoopMulti*>(self);
    if (what == CURL_POLL_REMOVE) {
      m->loop_.unwatch(s);
      return 0;
    }
    std::uint32_t events = 0;
    if (what & CURL_POLL_IN) events |= EPOLLIN;
    if (what & CURL_POLL_OUT) events |= EPOLLOUT;
    m->loop_.watch(s, events, [m, s](std::uint32_t ready) {
      int flags = 0;
      if (ready & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (ready & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (ready & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      m->act(s, flags);
    });
    return 0;
  }

  static int on_timer(CURLM*, long timeout_ms, void* self) {
    auto* m = static_cast<LoopMulti*>(self);
    if (m->timer_) m->loop_.cancel_timer(m->timer_);
    m->timer_ = 0;
    if (timeout_ms < 0) return 0;
    // Not from inside this callback: libcurl forbids calling back into the multi handle here.
    m->timer_ = m->loop_.add_timer(std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms), [m] {
      m->timer_ = 0;
      m->act(CURL_SOCKET_TIMEOUT, 0);
    });
    return 0;
  }

  void act(curl_socket_t s, int flags) {
    int running = 0;
    curl_multi_socket_action(multi_, s, flags, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      const CURLcode code = msg->data.result;
      Transfer* t = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      curl_multi_remove_handle(multi_, easy);
      if (!t) continue;
      t->code = code;
      t->done = true;
      loop_.resume(t->fiber);
    }
  }

  EventLoop& loop_;
  CURLM* multi_;
  EventLoop::TimerId timer_ = 0;
  std::size_t running_ = 0;  // transfers added and not done
};

}  // namespace

CurlTransport::CurlTransport(CurlTransportOptions options) : options_(std::move(options)) {}

CurlTransport::~CurlTransport() {
  for (const auto& idle : idle_) curl_easy_cleanup(static_cast<CURL*>(idle.first));
}

void* CurlTransport::acquire() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      void* h = idle_.back().first;  // LIFO: the warmest connection cache first
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void CurlTransport::release(void* handle) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<void*> surplus;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.emplace_back(handle, now);
    while (!idle_.empty() &&
           (idle_.size() > options_.max_idle_handles || now - idle_.front().second > options_.idle_handle_ttl)) {
      surplus.push_back(idle_.front().first);
      idle_.pop_front();
    }
  }
  for (void* h : surplus) curl_easy_cleanup(static_cast<CURL*>(h));  // outside the lock: closes sockets
}

namespace {

// What a request's body is read from while libcurl sends it.
struct RequestBody {
  std::unique_ptr<curl_mime, MimeDeleter> mime;  // a multipart form (Mailgun)
  BodyReader reader;                             // or the bytes, streamed from the request: no copy
  std::vector<BodyReader> parts;
};

// What every request gets: its URL, no signals, http(s) only, no redirects, timeouts, TLS
// verification, the proxy, small buffers, and where the answer goes.
void set_common_options(CURL* curl, const HttpRequest& request, const CurlTransportOptions& options,
                        std::chrono::milliseconds timeout, Sink& sink, HttpResponse& response) {
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);               // we are multi-threaded
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);         // a redirect is an answer, not a hop
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
  // An empty string disables proxies, including any from the environment (http_proxy & co).
  curl_easy_setopt(curl, CURLOPT_PROXY, options.proxy.c_str());
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "mailrelayd/0.1");
  // One handle per send in flight, each keeping its buffers: the documented defaults are 64 KiB
  // for uploads (minimum 16 KiB) and 16 KiB for downloads; a provider's answer is a few hundred
  // bytes. Per thousand sends in flight this saves about 60 MiB.
  // https://curl.se/libcurl/c/CURLOPT_UPLOAD_BUFFERSIZE.html, .../CURLOPT_BUFFERSIZE.html
  curl_easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 4096L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response);
}

void set_form(CURL* curl, const HttpRequest& request, RequestBody& body) {
  auto& mime = body.mime;
  auto& part_readers = body.parts;
  mime.reset(curl_mime_init(curl));
  part_readers.reserve(request.form.size());
  for (const auto& field : request.form) {
    curl_mimepart* part = curl_mime_addpart(mime.get());
    curl_mime_name(part, field.name.c_str());
    part_readers.push_back(BodyReader{&field.value});
    curl_mime_data_cb(part, static_cast<curl_off_t>(field.value.size()), read_part, seek_part, nullptr,
                      &part_readers.back());
    if (!field.filename.empty()) {
      curl_mime_filename(part, field.filename.c_str());
      curl_mime_type(part, field.content_type.c_str());
    }
  }
  // Field names and filenames as backslash-escaped quoted strings (a '"' becomes \"), which a
  // form parser reads back as sent; libcurl's default is HTML5-style %22, which Mailgun keeps
  // in the filename
  // (https://curl.se/libcurl/c/CURLOPT_MIME_OPTIONS.html, CURLMIMEOPT_FORMESCAPE, 7.81.0).
  curl_easy_setopt(curl, CURLOPT_MIME_OPTIONS, static_cast<long>(CURLMIMEOPT_FORMESCAPE));
  curl_easy_setopt(curl, CURLOPT_MIMEPOST, mime.get());
}

}  // namespace

Result<HttpResponse, TransportError> CurlTransport::post(const HttpRequest& request,
                                                         std::chrono::milliseconds timeout) {
  CURL* curl = static_cast<CURL*>(acquire());
  if (!curl) return TransportError{TransportFailure::kOther, false, "curl_easy_init failed"};
  // Reset forgets the previous request's options but keeps the connection cache: the next
  // request to the same provider reuses the TCP+TLS connection.
  curl_easy_reset(curl);

  HttpResponse response;
  Sink sink{&response, options_.max_response_bytes};
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&](const std::string& line) {
    headers.reset(curl_slist_append(headers.release(), line.c_str()));
  };
  for (const auto& [name, value] : request.headers) add_header(name + ": " + value);
  add_header("Expect:");  // no 100-continue round trip (and no stall on servers without it)
  set_common_options(curl, request, options_, timeout, sink, response);
  RequestBody body{nullptr, BodyReader{&request.body}, {}};
  if (!request.form.empty()) {
    set_form(curl, request, body);
  } else {
    add_header("Content-Type: " + request.content_type);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(curl, CURLOPT_READDATA, &body.reader);
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());

  // On an event loop's fiber the transfer runs on the loop's multi handle; elsewhere (tests,
  // check-config) it blocks the calling thread.
  EventLoop* loop = current_fiber() ? EventLoop::current() : nullptr;
  // No CURLOPT_PIPEWAIT: with a provider that speaks HTTP/1.1 only it makes transfers queue for
  // the one connection in use instead of opening more. A connection known to multiplex (HTTP/2)
  // is shared without it.
  CURLcode code = loop ? LoopMulti::of(*loop).perform(curl) : curl_easy_perform(curl);
  Result<HttpResponse, TransportError> result = [&]() -> Result<HttpResponse, TransportError> {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
    // A 2xx is an acceptance whatever its body: an answer too large to keep is cut off, not a
    // failure (failing over would send the message twice). The provider finds no id in it.
    if (code != CURLE_OK && !(sink.overflow && response.status >= 200 && response.status < 300)) {
      return classify(code, curl, sink.overflow);
    }
    return std::move(response);
  }();
  // Options point at this call's buffers; unhook them before the handle goes back to the pool.
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(curl, CURLOPT_MIMEPOST, nullptr);
  release(curl);
  return result;
}

}  // namespace mailrelay
