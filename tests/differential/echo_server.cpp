// The daemon's front door (FrontDoor: the accept loop, the connection loop and the one HTTP/1.1
// parser) with an API that admits every request and echoes what the parser made of it:
// {"method", "target", "length"} (the body's length). tests/differential/run.py sends the same
// bytes to it and to Node's http server (llhttp), which echoes the same. Prints its port.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "front_door.h"

int main() {
  mailrelay::FrontDoorSettings settings;
  settings.event_threads = 1;
  settings.max_connections_per_ip = 0;
  settings.read_timeout = std::chrono::milliseconds(1000);
  mailrelay::FrontDoor door(settings);
  door.set_handlers({[](const httplib::Request&, mailrelay::RequestContext& ctx) -> std::uint64_t {
                       ctx.authenticated = true;
                       return 1 << 20;
                     },
                     [](httplib::Request& req, httplib::Response& res, mailrelay::RequestContext& ctx) {
                       if (ctx.framing_error || ctx.incomplete || ctx.over_budget) {
                         res.status = ctx.framing_error ? ctx.framing_error->status : 400;
                         return;
                       }
                       nlohmann::json echo{{"method", req.method}, {"target", req.target}, {"length", req.body.size()}};
                       res.set_content(echo.dump(), "application/json");
                     }});
  const int port = door.bind("127.0.0.1", 0);
  if (port < 0) return 1;
  std::printf("%d\n", port);
  std::fflush(stdout);
  door.serve();  // until killed
  return 0;
}
