#!/usr/bin/env python3
"""mailrelay benchmark: mailrelayd against the same fake provider hit directly (the limit) and
through nginx as a plain reverse proxy (a relay that transforms nothing), on loopback.

    python3 tests/bench/run.py [--build build] [--duration 5] [--out FILE]

Needs wrk, nginx and redis-server (Debian: apt-get install wrk nginx-light redis-server) and a build with the bench tools.
Every process it starts is stopped; every run is bounded by --duration. Prints a Markdown table.
"""
import argparse
import base64
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICKS = os.sysconf("SC_CLK_TCK")

# A realistic /v1/send body: two recipients, a cc, text and html parts, tags, metadata (~1.6 KB).
BODY = {
    "from": "Billing <billing@example.com>",
    "to": ["alice@example.org", {"email": "bob@example.org", "name": "Bob Example"}],
    "cc": ["accounts@example.org"],
    "reply_to": "support@example.com",
    "subject": "Your invoice INV-2026-11-0042 is ready",
    "text": "Hello Alice,\n\nyour invoice for November is ready. The amount of EUR 42.00 will be "
            "charged to the card ending in 4242 on 1 December.\n\n" + "Thank you for your business. " * 8,
    "html": "<html><body><p>Hello Alice,</p><p>your invoice for November is ready. The amount of "
            "<b>EUR 42.00</b> will be charged on 1 December.</p>" + "<p>Thank you for your business.</p>" * 8
            + "</body></html>",
    "headers": {"X-Campaign": "invoices-nov"},
    "tags": ["invoice", "billing"],
    "metadata": {"invoice_id": "INV-2026-11-0042", "customer": "cus_0042"},
}

# The same POST, each request with an Idempotency-Key of its own (thread id, count, run nonce).
WRK_KEYED_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  n = 0
  local f = io.open(os.getenv("BENCH_BODY"), "rb")
  body = f:read("*a")
  f:close()
end
function request()
  n = n + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-" .. os.getenv("BENCH_NONCE") .. "-" .. id .. "-" .. n}, body)
end
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total / TICKS


def status_mib(pids, key):
    """Sum of a /proc/<pid>/status memory line (VmHWM: peak RSS, VmRSS: now) over `pids`, in MiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


class Fake:
    def __init__(self, build, latency_ms, sendgrid_status=202, outage=None):
        extra = ["--outage-at-ms", str(outage[0]), "--outage-ms", str(outage[1])] if outage else []
        self.proc = subprocess.Popen(
            [os.path.join(build, "tests/bench/bench_fake_provider"), "--latency-ms", str(latency_ms),
             "--sendgrid-status", str(sendgrid_status), *extra],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"ready sendgrid=(\d+) mailgun=(\d+)", line)
        if not m:
            stop(self.proc)
            raise RuntimeError("fake provider did not start: " + line)
        self.sendgrid, self.mailgun = int(m.group(1)), int(m.group(2))

    def stats(self):
        """(connections accepted, requests answered) so far."""
        self.proc.send_signal(signal.SIGUSR1)
        line = self.proc.stdout.readline()
        m = re.match(r"stats connections=(\d+) requests=(\d+)", line)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

    def stop(self):
        stop(self.proc)
        return self.proc.stdout.read()


def threads_of(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def relay_counters(port):
    """What the relay counted that a provider answering at once must never cause: attempts that
    were not sent (timeouts, errors, skips behind an open circuit) and failovers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        text = b""
        while chunk := s.recv(65536):
            text += chunk
    text = text.decode(errors="replace")
    bad = sum(int(float(v)) for o, v in re.findall(r'^mailrelay_attempts_total\{[^}]*outcome="(\w+)"\} (\S+)$', text, re.M)
              if o != "sent")
    m = re.search(r"^mailrelay_failovers_total (\S+)$", text, re.M)
    shed = re.search(r'^mailrelay_refused_total\{limit="max_in_flight"\} (\S+)$', text, re.M)
    return {"not_sent": bad, "failovers": int(float(m.group(1))) if m else -1,
            "overloaded": int(float(shed.group(1))) if shed else 0}


class Relay:
    """mailrelayd on defaults (event loops, keep-alive), audit log to a file. Every client of the
    benchmark is 127.0.0.1: --max-connections-per-ip 0, as behind a balancer."""

    def __init__(self, build, fake, work, extra=()):
        self.log = os.path.join(work, "relay.log")
        env = dict(os.environ, SENDGRID_API_KEY="bench-fake-sendgrid-key", MAILGUN_API_KEY="bench-fake-mailgun-key")
        if os.environ.get("BENCH_RELAY_PRELOAD"):  # try an allocator without rebuilding
            env["LD_PRELOAD"] = os.environ["BENCH_RELAY_PRELOAD"]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [os.path.join(build, "mailrelayd"), "--listen", "127.0.0.1:0", "--providers", "sendgrid,mailgun",
                 "--sendgrid-base-url", f"http://127.0.0.1:{fake.sendgrid}",
                 "--mailgun-base-url", f"http://127.0.0.1:{fake.mailgun}", "--mailgun-domain", "mg.example.com",
                 "--audit-log", os.path.join(work, "audit.log"), "--max-connections-per-ip", "0", *extra],
                stdout=subprocess.DEVNULL, stderr=log, env=env)

        def port():
            with open(self.log) as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            return int(m.group(1)) if m else None
        self.port = wait_for(port, 15, "mailrelayd")
        self.url = f"http://127.0.0.1:{self.port}/v1/send"

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        stop(self.proc)


class Redis:
    """redis-server on a free loopback port, no persistence; stopped by its PID."""

    def __init__(self, work):
        self.port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    return c.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_for(up, 10, "redis-server")
        self.url = f"redis://127.0.0.1:{self.port}"

    def stop(self):
        stop(self.proc)


class Nginx:
    """nginx as a plain reverse proxy: the same POST passed to the fake SendGrid, kept alive."""

    def __init__(self, fake, work):
        self.port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream provider {{ server 127.0.0.1:{fake.sendgrid}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location / {{
            proxy_pass http://provider/v3/mail/send;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_for(up, 10, "nginx")
        self.url = f"http://127.0.0.1:{self.port}/v1/send"

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def stop(self):
        stop(self.proc)


class Direct:
    """wrk straight at the fake SendGrid: what the machine can do with no relay at all."""

    def __init__(self, fake):
        self.fake = fake
        self.url = f"http://127.0.0.1:{fake.sendgrid}/v3/mail/send"

    def pids(self):
        return [self.fake.proc.pid]

    def stop(self):
        pass


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections, duration, env):
    env = dict(env, BENCH_NONCE=f"{time.time_ns()}")  # keyed runs: keys never repeat across runs
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
           "-s", env["BENCH_SCRIPT"], url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60).stdout
    result = {"requests": 0, "rps": 0.0, "p50": 0.0, "p99": 0.0, "non2xx": 0, "errors": 0}
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    for p, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[key] = to_ms(m.group(1), m.group(2))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = sum(int(g) for g in m.groups()) if m else 0
    return result


def measure(target, connections, duration, env, fake=None):
    wrk(target.url, connections, 1, env)  # warm-up: connections, pools, caches
    pids = target.pids()
    cpu_before = cpu_seconds(pids)
    conns_before = fake.stats() if fake else None
    peak_threads = [0]
    sampling = threading.Event()

    def sample():  # the relay's threads, every 100 ms of the run
        while not sampling.wait(0.1):
            peak_threads[0] = max(peak_threads[0], sum(threads_of(p) for p in pids))
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = wrk(target.url, connections, duration, env)
    finally:
        sampling.set()
        sampler.join()
    r["cpu_us"] = (cpu_seconds(pids) - cpu_before) * 1e6 / max(1, r["requests"])
    r["rss"] = status_mib(pids, "VmHWM")
    r["threads"] = peak_threads[0]
    if fake:
        after = fake.stats()
        r["new_conns"] = after[0] - conns_before[0]
        r["provider_requests"] = after[1] - conns_before[1]
    if isinstance(target, Relay):
        r.update(relay_counters(target.port))
    return r


@contextlib.contextmanager
def relay_on(build, work, latency, outage=None):
    """A fake provider and mailrelayd on its defaults in front of it; both stopped at the end."""
    fake = Fake(build, latency, outage=outage)
    relay = None
    try:
        relay = Relay(build, fake, work)
        yield fake, relay
    finally:
        if relay:
            relay.stop()
        fake.stop()


def load(build, relay, connections, duration, body):
    """bench_load against the relay: totals and latency per status."""
    out = subprocess.run(
        [os.path.join(build, "tests/bench/bench_load"), "--port", str(relay.port), "--connections",
         str(connections), "--duration", str(duration), "--body", body],
        capture_output=True, text=True, timeout=duration + 60).stdout
    return json.loads(out)


def status(loaded, code):
    return loaded["by_status"].get(code, {"count": 0, "p50_ms": 0, "p99_ms": 0})


class Prober:
    """GET /healthz every 100 ms on a fresh connection (1 s timeout) while it runs: the worst
    latency and the failures."""

    def __init__(self, port):
        self.port, self.worst_ms, self.failures, self.count = port, 0.0, 0, 0
        self.running = True
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        for _ in range(6000):  # bounded: 10 minutes
            if not self.running:
                return
            start = time.time()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(1)
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    ok = s.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                ok = False
            self.count += 1
            self.worst_ms = max(self.worst_ms, (time.time() - start) * 1000)
            self.failures += 0 if ok else 1
            time.sleep(0.1)

    def stop(self):
        self.running = False
        self.thread.join()
        return self


def settle(pid, seconds):
    """RSS (MiB) after `seconds` of quiet."""
    time.sleep(seconds)
    return status_mib([pid], "VmRSS")


def extra_rows(args, build, work, body, env, only):
    """The concurrency scenarios: each a row of its own with its own figures."""
    out = []

    def wanted(name):
        return not only or name in only

    # Slow provider and many connections: nginx and mailrelayd side by side (wrk).
    for name, latency, conns in (("0ms-1024", 0, 1024), ("0ms-4096", 0, 4096), ("slow-1000ms-1024", 1000, 1024),
                                 ("100ms-1024", 100, 1024), ("100ms-4096", 100, 4096)):
        if not wanted(name):
            continue
        for kind in ("nginx", "mailrelayd"):
            fake = Fake(build, latency)
            target = None
            try:
                target = Nginx(fake, work) if kind == "nginx" else Relay(build, fake, work)
                out.append((name, kind, measure(target, conns, max(args.duration, 5), env, fake)))
            finally:
                if target:
                    target.stop()
                fake.stop()
            print(f"  {name:12} {kind:10} {out[-1][2]['rps']:9.0f} req/s", file=sys.stderr)

    # The Idempotency-Key path (README "Running several instances"): every request with a key of its own, the keys in
    # process memory or in Redis. CPU per request of mailrelayd alone and with redis-server, p99.
    if wanted("idempotency-64"):
        keyed = dict(env, BENCH_SCRIPT=env["BENCH_KEYED_SCRIPT"])
        results = {}
        for store in ("memory", "redis"):
            fake = Fake(build, 0)
            redis = Redis(work) if store == "redis" else None
            relay = None
            try:
                relay = Relay(build, fake, work, ["--state-store", redis.url] if redis else [])
                pids = relay.pids() + ([redis.proc.pid] if redis else [])
                wrk(relay.url, 64, 1, keyed)
                cpu_relay, cpu_all = cpu_seconds(relay.pids()), cpu_seconds(pids)
                r = wrk(relay.url, 64, max(args.duration, 5), keyed)
                n = max(1, r["requests"])
                r["cpu_us"] = (cpu_seconds(relay.pids()) - cpu_relay) * 1e6 / n
                r["cpu_all_us"] = (cpu_seconds(pids) - cpu_all) * 1e6 / n
                r["rss"] = status_mib(relay.pids(), "VmHWM")
                results[store] = r
                out.append(("idempotency-64", f"mailrelayd+{store}", r))
            finally:
                if relay:
                    relay.stop()
                if redis:
                    redis.stop()
                fake.stop()
            print(f"  idempotency-64 {store:7} {out[-1][2]['rps']:9.0f} req/s", file=sys.stderr)
        m, rd = results["memory"], results["redis"]
        added = rd["cpu_us"] / m["cpu_us"] - 1 if m["cpu_us"] else 0
        out.append(("idempotency-64", "mailrelayd", {
            "summary": f"CPU µs/request memory {m['cpu_us']:.0f}, Redis {rd['cpu_us']:.0f} ({added * 100:+.0f} %; "
                       f"{rd['cpu_all_us']:.0f} with redis-server's own); p99 {m['p99']:.2f} ms -> {rd['p99']:.2f} ms; "
                       f"req/s {m['rps']:.0f} -> {rd['rps']:.0f}; non-2xx {m['non2xx']} / {rd['non2xx']}",
            "ok": added <= 0.20 and not m["non2xx"] and not rd["non2xx"]}))

    # Five bursts of 2048 connections 0.5 s apart at 100 ms: /healthz throughout, every request
    # answered, RSS after --settle seconds against RSS before.
    if wanted("bursts-2048x5"):
        with relay_on(build, work, 100) as (fake, relay):
            rss_start = status_mib([relay.proc.pid], "VmRSS")
            probe = Prober(relay.port)
            totals = {"requests": 0, "200": 0, "503": 0, "errors": 0}
            for _ in range(5):
                r = load(build, relay, 2048, 1, body)
                totals["requests"] += r["requests"]
                totals["200"] += status(r, "200")["count"]
                totals["503"] += status(r, "503")["count"]
                totals["errors"] += r["errors"]
                time.sleep(0.5)
            probe.stop()
            peak = status_mib([relay.proc.pid], "VmHWM")
            after = settle(relay.proc.pid, args.settle)
            out.append(("bursts-2048x5", "mailrelayd", {
                "summary": f"{totals['requests']} requests: {totals['200']} 200, {totals['503']} 503, "
                           f"{totals['errors']} connection errors; /healthz worst {probe.worst_ms:.0f} ms, "
                           f"{probe.failures} of {probe.count} failed; RSS {rss_start:.1f} MiB before, peak "
                           f"{peak:.1f}, {after:.1f} after {args.settle} s ({(after / rss_start - 1) * 100:+.0f} %); "
                           f"alive: {relay.proc.poll() is None}",
                "ok": totals["requests"] == totals["200"] + totals["503"] and probe.failures == 0}))
        print("  bursts done", file=sys.stderr)

    # A 1 s SendGrid outage under 64 clients: when does SendGrid carry traffic again?
    if wanted("blip-64"):
        with relay_on(build, work, 0, outage=(2000, 1000)) as (fake, relay):
            r = load(build, relay, 64, 16, body)
            relay.stop()
            text = fake.stop()  # the fake reports at exit
            m = re.search(r"recovered_after_ms=(-?\d+)", text or "")
            recovered = int(m.group(1)) if m else -1
            out.append(("blip-64", "mailrelayd", {
                "summary": f"SendGrid 503 for 1 s at t=2 s: it carried traffic again {recovered / 1000:.1f} s after "
                           f"the outage ended; {status(r, '200')['count']} of {r['requests']} requests 200",
                "ok": 0 <= recovered <= 12000 and status(r, "200")["count"] == r["requests"]}))
        print("  blip done", file=sys.stderr)

    # 300 slowloris connections (a header byte a second) beside 16 normal clients.
    if wanted("slowloris-300"):
        sockets = []
        with relay_on(build, work, 0) as (fake, relay):
            base = load(build, relay, 16, args.duration, body)
            for _ in range(300):
                s_ = socket.create_connection(("127.0.0.1", relay.port))
                s_.sendall(b"POST /v1/send HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
                sockets.append(s_)
            stop_trickle = threading.Event()

            def trickle():
                while not stop_trickle.wait(1.0):
                    for s_ in sockets:
                        try:
                            s_.send(b"a")
                        except OSError:
                            pass
            t = threading.Thread(target=trickle)
            t.start()
            probe = Prober(relay.port)
            attacked = load(build, relay, 16, args.duration, body)
            probe.stop()
            stop_trickle.set()
            t.join()
            b99, a99 = status(base, "200")["p99_ms"], status(attacked, "200")["p99_ms"]
            out.append(("slowloris-300", "mailrelayd", {
                "summary": f"16 clients p99 {b99:.2f} ms alone, {a99:.2f} ms beside 300 slowloris connections "
                           f"(+{a99 - b99:.2f} ms); req/s {base['rps']:.0f} -> {attacked['rps']:.0f}; /healthz worst "
                           f"{probe.worst_ms:.0f} ms, {probe.failures} failed",
                "ok": a99 - b99 <= 100 and probe.failures == 0}))
            for s_ in sockets:
                s_.close()
        print("  slowloris done", file=sys.stderr)

    # 32 clients posting 9 MiB bodies: peak RSS, and RSS 30 s after the load.
    if wanted("bodies-9MiB-32"):
        big = os.path.join(work, "big.json")
        with open(big, "w") as f:
            payload = base64.b64encode(os.urandom(9 * 1024 * 1024 * 3 // 4)).decode()
            json.dump(dict(BODY, attachments=[{"filename": "big.bin", "content_type": "application/octet-stream",
                                               "content": payload}]), f)
        with relay_on(build, work, 0) as (fake, relay):
            idle = status_mib([relay.proc.pid], "VmRSS")
            r = load(build, relay, 32, max(args.duration, 15), big)  # all 32 upload at once: the first finish after ~8 s
            peak = status_mib([relay.proc.pid], "VmHWM")
            after = settle(relay.proc.pid, min(args.settle, 30))
            out.append(("bodies-9MiB-32", "mailrelayd", {
                "summary": f"{r['requests']} requests ({status(r, '200')['count']} 200, {status(r, '503')['count']} 503) "
                           f"at {r['rps']:.1f} req/s; RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB, "
                           f"{after:.0f} MiB {min(args.settle, 30)} s after",
                "ok": peak <= 1024 and after - idle <= 100}))
        print("  bodies done", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--settle", type=int, default=60, help="seconds of quiet before RSS is read again")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every run served requests, every non-overload run answered 2xx only, and "
                         "no provider call that answers at once was anything but sent (no timeout, skip, failover)")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    for tool in ("wrk", "nginx", "redis-server"):
        if not (shutil.which(tool) or os.path.exists("/usr/sbin/" + tool)):
            sys.exit(f"bench: {tool} not found (apt-get install wrk nginx-light redis-server)")

    # 4096 connections on each side: raise the descriptor limit for us and what we start.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="mailrelay-bench-")
    body = os.path.join(work, "body.json")
    with open(body, "w") as f:
        json.dump(BODY, f)
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    keyed_script = os.path.join(work, "post-keyed.lua")
    with open(keyed_script, "w") as f:
        f.write(WRK_KEYED_SCRIPT)
    env = dict(os.environ, BENCH_BODY=body, BENCH_SCRIPT=script, BENCH_KEYED_SCRIPT=keyed_script)

    rows = []  # (scenario, target, result)
    scenarios = [("0ms-64", 0, 64), ("0ms-256", 0, 256), ("100ms-64", 100, 64), ("100ms-256", 100, 256)]
    only = set(args.only.split(",")) if args.only else None
    started = time.time()
    try:
        for name, latency, conns in scenarios:
            if only and name not in only:
                continue
            for kind in ("direct", "nginx", "mailrelayd"):
                fake = Fake(build, latency)
                target = None
                try:
                    target = Direct(fake) if kind == "direct" else Nginx(fake, work) if kind == "nginx" else Relay(build, fake, work)
                    rows.append((name, kind, measure(target, conns, args.duration, env, fake)))
                finally:
                    if target:
                        target.stop()
                    fake.stop()
                print(f"  {name:12} {kind:10} {rows[-1][2]['rps']:9.0f} req/s", file=sys.stderr)
        # Failover: SendGrid refuses every message (400), Mailgun accepts: two provider calls each.
        # Outage: SendGrid answers 503; after 5 failures its circuit opens and it is skipped.
        for name, status in (("failover-0ms-64", 400), ("outage-0ms-64", 503)):
            if only and name not in only:
                continue
            fake = Fake(build, 0, status)
            relay = None
            try:
                relay = Relay(build, fake, work, ["--max-retries", "0"])
                rows.append((name, "mailrelayd", measure(relay, 64, args.duration, env, fake)))
            finally:
                if relay:
                    relay.stop()
                fake.stop()
            print(f"  {name:12} mailrelayd {rows[-1][2]['rps']:9.0f} req/s", file=sys.stderr)
        # Overload: 1024 and 2048 connections at 100 ms, default settings, latency per status.
        for conns in (1024, 2048):
            name = f"overload-100ms-{conns}"
            if only and name not in only:
                continue
            fake = Fake(build, 100)
            relay = None
            try:
                relay = Relay(build, fake, work)
                rss_before = status_mib([relay.proc.pid], "VmRSS")
                cpu_before = cpu_seconds(relay.pids())
                out = subprocess.run(
                    [os.path.join(build, "tests/bench/bench_load"), "--port", str(relay.port), "--connections",
                     str(conns), "--duration", str(args.duration), "--body", body],
                    capture_output=True, text=True, timeout=args.duration + 60).stdout
                load = json.loads(out)
                ok = load["by_status"].get("200", {"count": 0, "p50_ms": 0, "p99_ms": 0})
                shed = load["by_status"].get("503", {"count": 0, "p50_ms": 0, "p99_ms": 0})
                r = {"requests": load["requests"], "rps": load["rps"], "p50": ok["p50_ms"], "p99": ok["p99_ms"],
                     "non2xx": load["requests"] - ok["count"], "errors": load["errors"],
                     "cpu_us": (cpu_seconds(relay.pids()) - cpu_before) * 1e6 / max(1, load["requests"]),
                     "rss": status_mib(relay.pids(), "VmHWM"), "shed": shed, "alive": relay.proc.poll() is None,
                     "rss_growth": status_mib([relay.proc.pid], "VmRSS") - rss_before}
                rows.append((name, "mailrelayd", r))
            finally:
                if relay:
                    relay.stop()
                fake.stop()
            print(f"  {name:12} mailrelayd {rows[-1][2]['rps']:9.0f} req/s", file=sys.stderr)
        rows += extra_rows(args, build, work, body, env, only)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def find(scenario, kind):
        for s, k, r in rows:
            if s == scenario and k == kind:
                return r
        return None

    lines = [f"{os.cpu_count()} cores, {args.duration} s per run, wrk -t2, loopback; "
             f"total {time.time() - started:.0f} s", "",
             "| scenario | target | req/s | p50 ms | p99 ms | non-2xx | sock err | CPU µs/req | peak RSS MiB | threads "
             "| new provider conns /100 req | not sent / failovers | vs nginx |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario, kind, r in rows:
        if "summary" in r:
            continue
        ref = find(scenario, "nginx") or (find("0ms-64", "nginx") if scenario.startswith("failover") or scenario.startswith("outage") else None)
        ratio = f"{r['rps'] / ref['rps']:.2f}" if ref and kind != "nginx" and ref["rps"] else ""
        conns = (f"{100 * r['new_conns'] / r['provider_requests']:.2f}" if r.get("provider_requests") else "")
        relay_bad = f"{r['not_sent']} / {r['failovers']}" if "not_sent" in r else ""
        if r.get("overloaded"):
            relay_bad += f" ({r['overloaded']} × 503 overloaded)"
        lines.append(f"| {scenario} | {kind} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']} | "
                     f"{r['errors']} | {r['cpu_us']:.0f} | {r['rss']:.1f} | {r.get('threads', '')} | {conns} | "
                     f"{relay_bad} | {ratio} |")
    for scenario, kind, r in rows:
        if "shed" in r:
            lines.append(f"\n{scenario}: 200s p50 {r['p50']:.0f} ms p99 {r['p99']:.0f} ms; 503s {r['shed']['count']} "
                         f"(p50 {r['shed']['p50_ms']:.1f} ms, p99 {r['shed']['p99_ms']:.1f} ms); connection errors "
                         f"{r['errors']}; daemon alive: {r['alive']}; RSS growth during the run {r['rss_growth']:.1f} MiB")
    for scenario, kind, r in rows:
        if "summary" in r:
            lines.append(f"\n{scenario}: {r['summary']}" + ("" if r["ok"] else " (TARGET MISSED)"))
    switch = os.path.join(build, "tests/bench/bench_switch_cost")
    if os.path.exists(switch) and not only:
        costs = subprocess.run([switch], capture_output=True, text=True, timeout=120).stdout.split("\n")[1:]
        lines.append("\nsuspend+resume round trip (ns): " + ", ".join(c for c in costs if c))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.check:
        bad = [(s, k) for s, k, r in rows if "summary" not in r and
               (r["requests"] == 0 or (not s.startswith(("overload", "100ms-4096")) and (r["non2xx"] or r["errors"])))]
        bad += [(s, k) for s, k, r in rows if "summary" in r and not r["ok"]]
        bad += [(s, k) for s, k, r in rows if "alive" in r and not r["alive"]]
        # A provider that answers at once: any attempt not sent, or any failover, is the relay's own
        # making (README "Concurrency"). Counted over the warm-up too.
        bad += [(s, k, "not sent / failovers") for s, k, r in rows if "not_sent" in r and
                not s.startswith(("failover", "outage")) and (r["not_sent"] or r["failovers"])]
        if bad or not rows:
            sys.exit(f"bench: failed runs: {bad}")


if __name__ == "__main__":
    main()
