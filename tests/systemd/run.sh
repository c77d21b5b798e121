#!/usr/bin/env bash
# The package as installed, under a real systemd (ctest `systemd_package`): builds the .deb from
# this tree with dpkg-buildpackage, checks it with lintian, boots systemd as PID 1 of a Debian
# bookworm container made from Debian's packages (container.sh), installs the .deb there and
# drives it only as an operator would: systemctl, journalctl, logrotate, dpkg, curl, and the
# files under /etc. Every step is one "ok" line or the test fails with the daemon's journal.
#
#   tests/systemd/run.sh BUILD_DIR      (BUILD_DIR: a cmake build with bench_fake_provider)
#
# Exit 77 (skipped) only where the machine forbids it: not root, or no cgroup or namespaces of
# our own. Missing tools are installed by .ci/install-deps; without them the test fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
. "$here/container.sh"

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (systemd-nspawn, cgroups)"; exit 77; }
for tool in systemd-nspawn mmdebstrap dpkg-buildpackage lintian nsenter; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (.ci/install-deps installs it)"; exit 1; }
done
fake=$build/tests/bench/bench_fake_provider
[ -x "$fake" ] || { echo "FAIL: $fake is not built"; exit 1; }

work=$(mktemp -d /var/tmp/mailrelay-systemd.XXXXXX)
steps=0
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -n "${CT_PID:-}" ]; then
    echo "--- the daemon's journal in the container ---"
    ct journalctl -u mailrelayd --no-pager -n 60 2>/dev/null || true
  fi
  ct_stop
  rm -rf "$work"
  exit "$rc"
}
trap finish EXIT
ok() { steps=$((steps + 1)); echo "ok $steps - $*"; }
fail() { echo "FAIL: $*"; exit 1; }

# --- the package, built from this tree ---------------------------------------------------------
# MAILRELAY_SYSTEMD_DEB=path skips the build (when working on this test: the build takes minutes).
src=$work/src
mkdir -p "$src"
if [ -n "${MAILRELAY_SYSTEMD_DEB:-}" ]; then
  version=$(dpkg-deb -f "$MAILRELAY_SYSTEMD_DEB" Version)
  deb=$MAILRELAY_SYSTEMD_DEB
else
  if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then  # the tree as git sees it, uncommitted files too
    (cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src") ||
      fail "cannot copy the tree"
  else
    tar -C "$root" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -C "$src" -xf - || fail "cannot copy the tree"
  fi
  version=$(cd "$src" && dpkg-parsechangelog -S Version)
  arch=$(dpkg-architecture -qDEB_HOST_ARCH)
  if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=2 nocheck" dpkg-buildpackage -b -uc -us >"$work/deb.log" 2>&1); then
    tail -n 40 "$work/deb.log"
    fail "dpkg-buildpackage"
  fi
  deb=$work/mailrelay_${version}_${arch}.deb
  [ -f "$deb" ] || fail "no $deb"
  lintian --fail-on error --suppress-tags package-supports-alternative-init-but-no-init.d-script "$deb" ||
    fail "lintian found errors"
  ok "dpkg-buildpackage built $(basename "$deb"); lintian: no errors"
fi

# The upgrade: the same package with a higher version (what the maintainer scripts see on upgrade).
share=$work/share
mkdir -p "$share"
cp "$deb" "$share/mailrelay.deb"
dpkg-deb -R "$deb" "$work/next"
sed -i "s/^Version: .*/Version: ${version}+next1/" "$work/next/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/next" "$share/mailrelay-next.deb" >/dev/null
cp "$fake" "$share/fake_provider"

# --- the container -------------------------------------------------------------------------------
# Runtime dependencies of the .deb are in the root file system, so dpkg -i needs no network.
deps=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' | grep -v '^$')
rootfs=$(ct_rootfs systemd systemd-sysv dbus logrotate curl jq redis-server procps gzip $deps) ||
  fail "mmdebstrap could not build the root file system"
set +e
ct_boot "$rootfs" "$share" "$work/boot.log"
booted=$?
set -e
[ "$booted" = 77 ] && { echo "SKIP: this machine forbids the container (see above)"; trap - EXIT; ct_stop; rm -rf "$work"; exit 77; }
[ "$booted" = 0 ] || fail "the container did not boot"
ok "systemd $(ct systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p') is PID 1 of a bookworm container"

# --- helpers -------------------------------------------------------------------------------------
port=8025
token=ops-token-not-a-secret-0123456789
main_pid() { ct systemctl show -p MainPID --value mailrelayd; }
# send [HEADER...]: POST one message with the token; prints "STATUS BODY".
send() {
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  ct curl -s -m 10 -o /tmp/answer -w '%{http_code}' "${args[@]}" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' "http://127.0.0.1:$port/v1/send" \
    -d '{"from":"Billing <billing@example.com>","to":["alice@example.org"],"subject":"Invoice","text":"Hello"}'
  echo -n " "
  ct cat /tmp/answer
}
wait_healthy() {
  local i
  for i in $(seq 1 100); do
    [ "$(ct curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
requests_logged() { ct sh -c 'zcat -f /var/log/mailrelayd/audit.log* | grep -c "\"path\":\"/v1/send\",\"status\":200"' || true; }
outbox_files() { ct sh -c 'ls /var/lib/mailrelayd/outbox 2>/dev/null | wc -l'; }

# --- install, configure, enable ------------------------------------------------------------------
ct dpkg -i /srv/test/mailrelay.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
[ "$(ct systemctl is-enabled mailrelayd || true)" = disabled ] || fail "the unit is enabled on installation"
[ "$(ct systemctl is-active mailrelayd || true)" != active ] || fail "the unit was started on installation"
for f in /usr/bin/mailrelayd /lib/systemd/system/mailrelayd.service /etc/mailrelay/mailrelay.conf \
         /etc/logrotate.d/mailrelayd /usr/share/man/man8/mailrelayd.8.gz /usr/share/doc/mailrelay/README.md \
         /usr/share/doc/mailrelay/openapi.yaml /usr/share/doc/mailrelay/contrib/mailrelay-rules.yml \
         /usr/share/doc/mailrelay/contrib/mailrelay-dashboard.json; do
  ct test -e "$f" || fail "$f is not installed"
done
ct dpkg-query -W -f='${Conffiles}\n' mailrelay | grep -q /etc/mailrelay/mailrelay.conf || fail "mailrelay.conf is not a conffile"
ct sh -c 'zcat /usr/share/man/man8/mailrelayd.8.gz | grep -q "^\.TH MAILRELAYD 8"' || fail "the manual page is not mailrelayd(8)"
ok "dpkg -i: the files in place, mailrelay.conf a conffile; neither enabled nor started"

ct systemd-run --quiet --unit=fake-provider /srv/test/fake_provider --sendgrid-port 9025 --mailgun-port 9026
# Listening before the daemon's first send: a send that found it closed would fail over to the
# outbox. (A sanitizer build of the fake cannot run here: the container has no libasan.)
fake_up=no
for i in $(seq 1 50); do ct curl -s -m 1 -o /dev/null http://127.0.0.1:9025/ && { fake_up=yes; break; }; sleep 0.1; done
[ "$fake_up" = yes ] || fail "the fake provider does not listen in the container: $(ct journalctl -u fake-provider --no-pager | tail -n 3)"
ct install -d -m 0700 /etc/credstore
ct sh -c "printf 'ops:$token:send,admin\n' > /etc/credstore/mailrelay.tokens"
ct sh -c 'printf "SG.fake-key-for-tests\n" > /etc/credstore/mailrelay.sendgrid_api_key'
ct sh -c 'printf "fake-recipient-key-for-tests-0123\n" > /etc/credstore/mailrelay.audit_recipient_key'
ct sh -c 'chmod 0600 /etc/credstore/mailrelay.*'
ct sh -c "cat >> /etc/mailrelay/mailrelay.conf <<EOF
listen = \"127.0.0.1:$port\"
providers = \"sendgrid,outbox\"
sendgrid-base-url = \"http://127.0.0.1:9025\"
outbox-dir = \"/var/lib/mailrelayd/outbox\"
state-store = \"redis://127.0.0.1:6379/0\"
EOF"
ct cp /etc/mailrelay/mailrelay.conf /root/mailrelay.conf.good
ct systemctl enable --now mailrelayd >/dev/null 2>&1 || fail "systemctl enable --now mailrelayd"
wait_healthy || fail "/healthz does not answer after enable --now"
[ "$(ct systemctl is-enabled mailrelayd)" = enabled ] || fail "not enabled"
pid1=$(main_pid)
uid=$(ct ps -o uid= -p "$pid1" | tr -d ' ')
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "the daemon runs as root"
ok "systemctl enable --now: active as a DynamicUser (uid $uid), credentials from /etc/credstore"

# A check by hand, as the README shows it: it reads the same credentials as the unit.
ct mailrelayd check-config --config /etc/mailrelay/mailrelay.conf --audit-log /var/log/mailrelayd/audit.log \
  >"$work/check" 2>&1 || { cat "$work/check"; fail "check-config by hand"; }
grep -q '^clients: 1 (/etc/credstore/mailrelay.tokens)' "$work/check" || { cat "$work/check"; fail "check-config found no tokens"; }
grep -q 'recipient hashes on' "$work/check" || fail "check-config found no recipient key"
ok "check-config by hand: configuration OK, tokens and keys from the credential store"

# --- a send --------------------------------------------------------------------------------------
answer=$(send)
case "$answer" in "200 "*'"status":"sent","provider":"sendgrid"'*) ;; *) fail "send: $answer" ;; esac
anon=$(ct curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d '{}' "http://127.0.0.1:$port/v1/send")
[ "$anon" = 401 ] || fail "a send without a token got $anon"
ct grep -q '"recipient_hashes":\["' /var/log/mailrelayd/audit.log || fail "no recipient hash in the audit log"
[ "$(ct stat -c %u /var/log/mailrelayd/audit.log)" = "$uid" ] || fail "the audit log is not the dynamic user's"
# The README's recipe, as installed: the hash from the unit's own key, then every file searched.
found=$(ct sh -c 'h=$(mailrelayd hash-address alice@example.org) && zgrep -h -F "\"$h\"" /var/log/mailrelayd/audit.log* | grep -c "\"event\":\"request\""')
[ "$found" = 1 ] || fail "the hash-address recipe found $found requests for alice (1 expected)"
nobody=$(ct sh -c 'h=$(mailrelayd hash-address nobody@example.org) && zgrep -h -F "\"$h\"" /var/log/mailrelayd/audit.log* | grep -c "\"event\":\"request\""' || true)
[ "$nobody" = 0 ] || fail "the hash-address recipe found $nobody requests for nobody (0 expected)"
ok "a send through SendGrid (fake, in the container): 200; 401 without a token; alice's hash found once, nobody's never"

# --- reload --------------------------------------------------------------------------------------
ct sed -i 's/^providers = .*/providers = "outbox,sendgrid"/' /etc/mailrelay/mailrelay.conf
ct systemctl reload mailrelayd || fail "systemctl reload with a good configuration failed"
[ "$(main_pid)" = "$pid1" ] || fail "reload replaced the process"
answer=$(send)
case "$answer" in "200 "*'"status":"sent","provider":"outbox"'*) ;; *) fail "after reload, the send went elsewhere: $answer" ;; esac
[ "$(outbox_files)" = 1 ] || fail "the outbox has $(outbox_files) files (1 expected): $(ct ls /var/lib/mailrelayd/outbox | tr "\n" " ")"
ok "systemctl reload with a changed configuration: the next send goes to the outbox; same process"

ct sh -c 'echo "max-retries = lots" >> /etc/mailrelay/mailrelay.conf'
if ct systemctl reload mailrelayd 2>/dev/null; then fail "systemctl reload with a broken configuration succeeded"; fi
[ "$(main_pid)" = "$pid1" ] || fail "a broken reload replaced the process"
[ "$(ct systemctl is-active mailrelayd)" = active ] || fail "a broken reload stopped the service"
ct systemctl status mailrelayd --no-pager -l >"$work/status" 2>&1 || true
grep -q 'reload failed' "$work/status" || { cat "$work/status"; fail "systemctl status does not say the reload failed"; }
answer=$(send)
case "$answer" in "200 "*'"status":"sent","provider":"outbox"'*) ;; *) fail "after a broken reload: $answer" ;; esac
ct cp /root/mailrelay.conf.good /etc/mailrelay/mailrelay.conf
ok "systemctl reload with a broken configuration: reported failed, the daemon serves on the previous one"

# --- rotation ------------------------------------------------------------------------------------
sent=3
for i in 1 2; do send >/dev/null; sent=$((sent + 1)); done
ct logrotate -f /etc/logrotate.d/mailrelayd || fail "logrotate -f (first)"
for i in 1 2; do send >/dev/null; sent=$((sent + 1)); done
sleep 1.1   # the rotated file's name has the second in it (dateformat -%Y%m%d-%s)
ct logrotate -f /etc/logrotate.d/mailrelayd || fail "logrotate -f (second)"
for i in 1 2; do send >/dev/null; sent=$((sent + 1)); done
[ "$(requests_logged)" = "$sent" ] || fail "the audit files hold $(requests_logged) send lines, $sent sends were answered"
ct test -s /var/log/mailrelayd/audit.log || fail "audit.log was not opened again after rotation"
ct sh -c 'ls /var/log/mailrelayd/audit.log-*.gz >/dev/null' || fail "no compressed file after two rotations"
if ct sh -c 'ls /var/log/mailrelayd/audit.log.[0-9]* >/dev/null 2>&1'; then fail "two rotation schemes: audit.log.N exists"; fi
ok "logrotate -f twice: one scheme (audit.log-DATE, .gz), audit.log opened again, $sent of $sent send lines kept"

# --- restart: idempotency from the state store ---------------------------------------------------
first=$(send "Idempotency-Key: restart-1")
files=$(outbox_files)
ct systemctl restart mailrelayd
wait_healthy || fail "/healthz after restart"
pid2=$(main_pid)
[ "$pid2" != "$pid1" ] || fail "restart kept the process"
again=$(send "Idempotency-Key: restart-1")
id1=$(echo "${first#* }" | ct jq -r .request_id)
id2=$(echo "${again#* }" | ct jq -r .request_id)
[ "$id1" = "$id2" ] && [ "${again%% *}" = 200 ] || fail "the key was not replayed after restart: $first / $again"
[ "$(outbox_files)" = "$files" ] || fail "the replay sent again"
ok "systemctl restart: Idempotency-Key replayed from Redis (request $id1), nothing sent twice"

# --- the watchdog --------------------------------------------------------------------------------
ct mkdir -p /etc/systemd/system/mailrelayd.service.d
ct sh -c 'printf "[Service]\nWatchdogSec=3\nTimeoutAbortSec=3\n" > /etc/systemd/system/mailrelayd.service.d/watchdog.conf'
ct systemctl daemon-reload
ct systemctl restart mailrelayd
wait_healthy || fail "/healthz after the watchdog drop-in"
pid3=$(main_pid)
restarts=$(ct systemctl show -p NRestarts --value mailrelayd)
ct kill -STOP "$pid3"
for i in $(seq 1 400); do
  now=$(main_pid)
  [ "$now" != "$pid3" ] && [ "$now" != 0 ] && [ "$(ct systemctl is-active mailrelayd || true)" = active ] && break
  sleep 0.1
done
[ "$(main_pid)" != "$pid3" ] || fail "the watchdog did not restart a stopped daemon within 40 s"
[ "$(ct systemctl show -p NRestarts --value mailrelayd)" -gt "$restarts" ] || fail "NRestarts did not grow"
wait_healthy || fail "/healthz after the watchdog restart"
ct journalctl -u mailrelayd --no-pager | grep -q 'Watchdog timeout' || fail "the journal does not show the watchdog"
ct rm -r /etc/systemd/system/mailrelayd.service.d
ct systemctl daemon-reload
ok "watchdog: a SIGSTOPped daemon is killed and restarted (Watchdog timeout in the journal)"

# --- upgrade, removal, purge ---------------------------------------------------------------------
ct systemctl restart mailrelayd && wait_healthy
pid4=$(main_pid)
ct dpkg -i /srv/test/mailrelay-next.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i (upgrade)"; }
[ "$(ct dpkg-query -W -f '${Version}' mailrelay)" = "${version}+next1" ] || fail "the upgrade did not install"
[ "$(ct systemctl is-active mailrelayd)" = active ] || fail "the service is not running after the upgrade"
[ "$(main_pid)" != "$pid4" ] || fail "the upgrade did not restart the daemon"
wait_healthy || fail "/healthz after the upgrade"
answer=$(send)
case "$answer" in "200 "*) ;; *) fail "send after the upgrade: $answer" ;; esac
ok "dpkg -i of a newer version: the daemon restarted on it and serves"

ct dpkg -r mailrelay >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r"; }
[ "$(ct systemctl is-active mailrelayd || true)" != active ] || fail "dpkg -r left the service running"
if ct pgrep -x mailrelayd >/dev/null; then fail "dpkg -r left a mailrelayd process"; fi
ct test ! -e /usr/bin/mailrelayd || fail "dpkg -r left the binary"
ct test -e /etc/mailrelay/mailrelay.conf || fail "dpkg -r removed the configuration"
ok "dpkg -r: stopped, binary gone, configuration kept"

ct dpkg -P mailrelay >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -P"; }
ct test ! -e /etc/mailrelay/mailrelay.conf || fail "dpkg -P left mailrelay.conf"
ct test ! -e /etc/logrotate.d/mailrelayd || fail "dpkg -P left the logrotate file"
# What the README says stays: the operator's secrets, the audit logs, the state directory.
ct test -e /etc/credstore/mailrelay.tokens || fail "dpkg -P removed the operator's credentials (the README says they stay)"
ct sh -c 'ls /var/log/mailrelayd/audit.log* >/dev/null' || fail "dpkg -P removed the audit logs (the README says they stay)"
ct test -d /var/lib/private/mailrelayd/outbox || fail "dpkg -P removed the state directory (the README says it stays)"
ok "dpkg -P: configuration and logrotate file gone; credentials, audit logs and /var/lib/private/mailrelayd stay, as the README says"

echo "systemd package test: $steps steps passed"
