#!/bin/sh
# Builds one libFuzzer target with clang (ASan + UBSan) and runs it for a bounded time on a copy
# of its seed and regression corpus (tests/fuzz/corpus/TARGET). Exit 77 (ctest: skipped) when
# clang or its fuzzer runtime is missing.
# Usage: run.sh SOURCE_DIR WORK_DIR SECONDS TARGET     (TARGET: request framing route auth webhook)
set -eu
src=$1 work=$2/$4 seconds=${MAILRELAY_FUZZ_SECONDS:-$3} target=$4
command -v clang++ >/dev/null 2>&1 || { echo "clang++ not installed: fuzzer skipped"; exit 77; }
mkdir -p "$work"
cat > "$work/probe.cpp" <<'EOC'
#include <cstdint>
#include <cstddef>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }
EOC
if ! clang++ -fsanitize=fuzzer "$work/probe.cpp" -o "$work/probe" >/dev/null 2>&1; then
  echo "clang's libFuzzer runtime is not installed (Debian: libclang-rt-14-dev): fuzzer skipped"
  exit 77
fi
s="$src/src"
max_len=4096
case "$target" in
  request) sources="$s/message/email.cpp $s/base/base64.cpp $s/message/mime.cpp $s/providers/sendgrid_provider.cpp
                    $s/providers/mailgun_provider.cpp $s/message/message_limits.cpp $s/providers/http_provider.cpp
                    $s/base/json_depth.cpp $s/providers/sendgrid_webhook.cpp $s/providers/mailgun_webhook.cpp
                    $s/providers/delivery_events.cpp $s/base/hash.cpp $s/base/text_helpers.cpp" libs="-lcurl -lcrypto" ;;
  framing) sources="$s/http/request_framing.cpp" libs="" max_len=131072 ;;  # a 100 KB path included
  route)   sources="$s/http/routes.cpp" libs="" max_len=8192 ;;
  auth)    sources="$s/providers/delivery_events.cpp $s/base/base64.cpp $s/base/text_helpers.cpp" libs="-lcrypto" ;;
  webhook) sources="$s/providers/delivery_events.cpp $s/providers/sendgrid_webhook.cpp $s/providers/mailgun_webhook.cpp
                    $s/providers/postmark_webhook.cpp $s/base/base64.cpp $s/base/hash.cpp $s/base/text_helpers.cpp
                    $s/base/json_depth.cpp" libs="-lcrypto" max_len=131072 ;;
  *) echo "unknown fuzz target $target"; exit 2 ;;
esac
# shellcheck disable=SC2086
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  $(pkg-config --cflags cpp-httplib) $(for d in "$s"/*/; do printf -- "-I%s " "$d"; done) -I"$src/tests/fakes" "$src/tests/fuzz/${target}_fuzzer.cpp" $sources $libs -o "$work/fuzzer"
rm -rf "$work/corpus" && mkdir -p "$work/corpus" && cp "$src/tests/fuzz/corpus/$target/"* "$work/corpus/"
# Crashes, leaks, sanitizer reports and the target's own checks make libFuzzer exit non-zero.
"$work/fuzzer" -error_exitcode=1 -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$work/" \
  "$work/corpus"
