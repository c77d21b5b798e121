#!/bin/sh
# Builds the libFuzzer target with clang (ASan + UBSan) and runs it for a bounded time on a copy
# of the seed corpus. Exit 77 (ctest: skipped) when clang or its fuzzer runtime is missing.
# Usage: run.sh SOURCE_DIR WORK_DIR SECONDS
set -eu
src=$1 work=$2 seconds=${MAILRELAY_FUZZ_SECONDS:-$3}
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
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src/src" \
  "$src/tests/fuzz/request_fuzzer.cpp" "$src/src/email.cpp" "$src/src/base64.cpp" "$src/src/mime.cpp" \
  "$src/src/sendgrid_provider.cpp" "$src/src/mailgun_provider.cpp" "$src/src/message_limits.cpp" "$src/src/http_provider.cpp" \
  -lcurl -o "$work/request_fuzzer"
rm -rf "$work/corpus" && mkdir -p "$work/corpus" && cp "$src/tests/fuzz/corpus/"* "$work/corpus/"
# Crashes, leaks, sanitizer reports and the target's own checks make libFuzzer exit non-zero.
"$work/request_fuzzer" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus"
