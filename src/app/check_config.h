// `mailrelayd check-config [options]`, in the spirit of `nginx -t`: everything a start would load
// (options, config file, key files, tokens file, provider settings, the audit log's place, the
// state store), checked without serving, and what the daemon would run with, without secrets.
// The unit's ExecReload runs it first, so a broken file never reaches the running daemon.
#pragma once

#include <string>
#include <vector>

#include "config.h"
#include "result.h"

namespace mailrelay {

// `args` excludes argv[0] and the word "check-config". The report (stdout, exit 0), or the exit
// code and the reason (2). REQUIRES: curl_global_init done.
Result<std::string, ConfigExit> check_config(const std::vector<std::string>& args);

}  // namespace mailrelay
