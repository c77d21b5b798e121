# Sourced by tests/systemd/run.sh: a Debian bookworm container with systemd as PID 1, from
# Debian's own packages, booted with systemd-nspawn and driven with nsenter.
#
# Facts it relies on (systemd 252 on these machines: no systemd as PID 1 on the host, hybrid or
# unified cgroups): mmdebstrap builds the root file system in about a minute (cached between runs
# under $MAILRELAY_ROOTFS_CACHE, default /var/cache/mailrelay-tests); `systemd-nspawn -b
# --register=no --keep-unit` boots it in about a second without a host systemd (without
# --keep-unit it fails with "Failed to open system bus"); with --keep-unit nspawn makes the
# container's cgroups under the caller's own, so each run moves itself into a cgroup of its own
# first and removes it afterwards; machinectl and `systemctl -M` need a host systemd, so commands
# enter the container with `nsenter -t <its PID 1> -a`. --volatile=overlay keeps the cached root
# file system untouched (every change lands on a tmpfs), --private-network gives the container a
# loopback of its own (its redis-server and the daemon's port cannot clash with the host's).

# The host's Debian mirror (the archive is reachable; the rest of the internet may not be).
ct_mirror() {
  local uri
  uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# ct_rootfs PACKAGE...: the path of a cached minbase bookworm root file system with PACKAGES,
# built with mmdebstrap when not cached yet.
ct_rootfs() {
  local cache=${MAILRELAY_ROOTFS_CACHE:-/var/cache/mailrelay-tests}
  local list key dir
  list=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
  key=$(printf 'bookworm minbase 1 %s' "$list" | sha256sum | cut -c1-16)
  dir=$cache/bookworm-$key
  if [ ! -x "$dir/lib/systemd/systemd" ]; then
    mkdir -p "$cache"
    rm -rf "$dir.tmp.$$"
    echo "# building the container's root file system (mmdebstrap, $(ct_mirror)): $list" >&2
    if ! mmdebstrap --quiet --variant=minbase --include="$list" bookworm "$dir.tmp.$$" "$(ct_mirror)" >"$dir.log" 2>&1; then
      tail -n 20 "$dir.log" >&2
      rm -rf "$dir.tmp.$$"
      return 1
    fi
    rm -rf "$dir" && mv "$dir.tmp.$$" "$dir"
  fi
  echo "$dir"
}

# The cgroup hierarchies a process is moved into before nspawn runs.
ct_cgroup_dirs() {
  local name=$1
  if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    echo "/sys/fs/cgroup/$name"                      # unified (cgroup v2 only)
  else
    [ -d /sys/fs/cgroup/systemd ] && echo "/sys/fs/cgroup/systemd/$name"
    [ -d /sys/fs/cgroup/unified ] && echo "/sys/fs/cgroup/unified/$name"
  fi
  return 0
}

# ct_boot ROOTFS SHARE LOG: boots the container (SHARE read-only at /srv/test) and sets CT_NSPAWN
# (nspawn's PID), CT_PID (the container's PID 1) and CT_CGROUP. Returns 77 when the kernel or the
# sandbox forbids it (no cgroup of our own, no namespaces).
ct_boot() {
  local rootfs=$1 share=$2 log=$3 d
  CT_CGROUP=mailrelay-systemd-$$
  for d in $(ct_cgroup_dirs "$CT_CGROUP"); do
    mkdir -p "$d" 2>/dev/null || { echo "cannot create the cgroup $d" >&2; return 77; }
  done
  unshare --mount --pid --fork true 2>/dev/null || { echo "cannot create namespaces (unshare)" >&2; return 77; }
  (
    for d in $(ct_cgroup_dirs "$CT_CGROUP"); do echo "$BASHPID" >"$d/cgroup.procs"; done
    exec systemd-nspawn --quiet -D "$rootfs" --boot --register=no --keep-unit --volatile=overlay \
      --private-network --console=passive --bind-ro="$share:/srv/test" --machine=mailrelay-test
  ) >"$log" 2>&1 </dev/null &
  CT_NSPAWN=$!
  local i
  CT_PID=""
  for i in $(seq 1 100); do
    CT_PID=$(pgrep -P "$CT_NSPAWN" -x systemd 2>/dev/null | head -n1 || true)
    [ -n "$CT_PID" ] && break
    kill -0 "$CT_NSPAWN" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$CT_PID" ]; then
    cat "$log" >&2
    return 1
  fi
  # Until its manager answers on the bus (it may not at first), then until start-up is over.
  local state=""
  for i in $(seq 1 600); do
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    case "$state" in
      running|degraded) return 0 ;;
      initializing|starting|"") sleep 0.1 ;;
      *) break ;;
    esac
  done
  echo "the container's systemd is '$state'" >&2
  ct systemctl --failed --no-pager >&2 || true
  return 1
}

# ct COMMAND...: runs COMMAND inside the container as root, with a clean environment.
ct() {
  nsenter -t "$CT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"
}

# Stops the container (nspawn shuts it down on SIGTERM; SIGKILL after 20 s) and removes its cgroup.
ct_stop() {
  local i d
  if [ -n "${CT_NSPAWN:-}" ] && kill -0 "$CT_NSPAWN" 2>/dev/null; then
    kill -TERM "$CT_NSPAWN" 2>/dev/null || true
    for i in $(seq 1 200); do kill -0 "$CT_NSPAWN" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CT_NSPAWN" 2>/dev/null || true
    wait "$CT_NSPAWN" 2>/dev/null || true
  fi
  for d in $(ct_cgroup_dirs "${CT_CGROUP:-none}"); do
    [ -d "$d" ] || continue
    find "$d" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$d" 2>/dev/null || true
  done
  return 0
}
