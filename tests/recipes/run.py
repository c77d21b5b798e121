#!/usr/bin/env python3
"""The README's audit-log recipes, run as written (ctest `readme_recipes`).

A real mailrelayd, real fake providers on loopback (tests/bench/fake_provider.cpp: SendGrid and
Mailgun wire formats) and the shipped logrotate file make an audit log with every kind of line
the recipes look for: sends by two clients to several addresses, failovers, skipped attempts (an
open circuit), operator switches, and a request whose outcome is unknown (the daemon killed with
SIGKILL while a provider holds the call). The log is rotated twice by logrotate (so there is a
compressed file, a plain rotated one and audit.log), and the daemon reopens it by itself (no
SIGUSR1: the shipped postrotate cannot reach a daemon outside systemd).

Then every command of the README's recipe block runs in bash exactly as written, with two
substitutions only: the log directory (/var/log/mailrelayd/ -> this run's), and `mailrelayd` ->
the built binary. Each answer is compared with the same question answered independently here, in
Python, from the same files. A recipe in the README without a check here fails the test.

usage: run.py BUILD_DIR      (exit 77: jq, zgrep or logrotate missing)
"""
import gzip
import hashlib
import hmac
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1])
DAEMON = os.path.join(BUILD, "mailrelayd")
FAKE = os.path.join(BUILD, "tests", "bench", "bench_fake_provider")
KEY = "fake-recipient-key-for-recipes-01"
TOKENS = {"billing": "tok-billing-not-a-secret-000001", "signup": "tok-signup-not-a-secret-0000002"}

for tool in ("jq", "zgrep", "logrotate"):
    if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        print(f"SKIP: {tool} is not installed (.ci/install-deps installs it)")
        sys.exit(77)

processes = []


def stop_all():
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def fail(message):
    print("FAIL:", message)
    stop_all()
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_provider(*extra):
    sg, mg = free_port(), free_port()
    p = subprocess.Popen([FAKE, "--sendgrid-port", str(sg), "--mailgun-port", str(mg), *extra],
                         stdout=subprocess.PIPE, text=True)
    processes.append(p)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    if not ready or not p.stdout.readline().startswith("ready"):
        fail("the fake provider did not start")
    return sg, mg


work = tempfile.mkdtemp(prefix="mailrelay-recipes.")
logdir = os.path.join(work, "log")
os.makedirs(logdir, mode=0o750)
creds = os.path.join(work, "creds")
os.makedirs(creds)
with open(os.path.join(creds, "audit_recipient_key"), "w") as f:
    f.write(KEY + "\n")
with open(os.path.join(work, "tokens"), "w") as f:
    f.write(f"billing:{TOKENS['billing']}:send,admin\nsignup:{TOKENS['signup']}\n")
port = free_port()
conf = os.path.join(work, "mailrelay.conf")


def write_conf(sg, mg, providers="sendgrid,mailgun"):
    with open(conf, "w") as f:
        f.write(f'listen = "127.0.0.1:{port}"\nproviders = "{providers}"\n'
                f'sendgrid-base-url = "http://127.0.0.1:{sg}"\nmailgun-base-url = "http://127.0.0.1:{mg}"\n'
                f'mailgun-domain = "mg.example.com"\ntokens-file = "{work}/tokens"\n'
                f'audit-log-max-bytes = 0\naudit-recipient-key-file = "{creds}/audit_recipient_key"\n'
                f'attempt-timeout-ms = 8000\ndeadline-ms = 9000\nmax-retries = 0\n')


def request(method, path, client, body=None, request_id=None, timeout=15):
    headers = {"Authorization": f"Bearer {TOKENS[client]}", "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def send(client, to, request_id=None):
    return request("POST", "/v1/send", client, {"from": "Billing <billing@example.com>", "to": to,
                                                 "subject": "Invoice", "text": "Hello"}, request_id)


def wait_healthy(daemon):
    for _ in range(100):
        if daemon.poll() is not None:
            fail("the daemon exited: " + daemon.stderr.read())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    fail("the daemon does not answer /healthz")


def reload(daemon, ops_lines):
    before = len(ops_lines)
    daemon.send_signal(signal.SIGHUP)
    for _ in range(100):
        if any("reloaded configuration" in line for line in ops_lines[before:]):
            return
        time.sleep(0.05)
    fail("the daemon did not reload")


def rotate():
    # The shipped file, for this run's directory (and its own state file: no root's /var/lib).
    with open(os.path.join(ROOT, "logrotate", "mailrelayd")) as f:
        text = f.read().replace("/var/log/mailrelayd/", logdir + "/")
    rotate_conf = os.path.join(work, "logrotate.conf")
    with open(rotate_conf, "w") as f:
        f.write(text)
    out = subprocess.run(["logrotate", "-f", "-s", os.path.join(work, "logrotate.state"), rotate_conf],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail("logrotate: " + out.stderr)


# --- the audit log ------------------------------------------------------------------------------
ok_sg, ok_mg = fake_provider()
bad_sg, bad_mg = fake_provider("--sendgrid-status", "503")
slow_sg, slow_mg = fake_provider("--latency-ms", "20000")
write_conf(ok_sg, ok_mg)
env = dict(os.environ, SENDGRID_API_KEY="SG.fake-recipes", MAILGUN_API_KEY="fake-recipes")
env.pop("CREDENTIALS_DIRECTORY", None)
daemon = subprocess.Popen([DAEMON, "--config", conf, "--audit-log", os.path.join(logdir, "audit.log")],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
processes.append(daemon)
ops_lines = []
threading.Thread(target=lambda: ops_lines.extend(iter(daemon.stderr.readline, "")), daemon=True).start()
wait_healthy(daemon)

# Sends that all succeed at SendGrid, by two clients, to alice and others.
for client, to, rid in [("billing", ["alice@example.org"], "demo-1"), ("billing", ["bob@example.net"], "demo-2"),
                        ("billing", ["alice@example.org", "carol@example.com"], "demo-3"),
                        ("signup", ["dave@example.org"], None), ("signup", ["Alice@Example.org"], None)]:
    status, body = send(client, to, rid)
    if status != 200:
        fail(f"send: {status} {body}")
rotate()
time.sleep(1.1)  # the daemon looks at its path at most once a second
send("signup", ["erin@example.org"])

# SendGrid answers 503: failovers to Mailgun, until its circuit opens and it is skipped.
write_conf(bad_sg, bad_mg)
reload(daemon, ops_lines)
for i in range(8):
    status, body = send("signup", ["frank@example.org"] if i % 2 else ["alice@example.org"])
    if status != 200:
        fail(f"send during the SendGrid outage: {status} {body}")
for enabled in (False, True):
    status, body = request("PATCH", "/v1/providers/mailgun", "billing", {"enabled": enabled, "reason": "incident 42"})
    if status != 200:
        fail(f"PATCH /v1/providers/mailgun: {status} {body}")
time.sleep(1.1)  # a new name for the second rotation (dateformat -%Y%m%d-%s)
rotate()
time.sleep(1.1)
send("billing", ["grace@example.org"])

# A provider that holds the call; the daemon is killed while it waits: an attempt line without
# its request line.
write_conf(slow_sg, slow_mg, providers="mailgun")
reload(daemon, ops_lines)
def lost():
    try:
        send("billing", ["heidi@example.org"], "lost-1")
    except OSError:
        pass  # the daemon is killed while this waits: no answer, as intended


threading.Thread(target=lost, daemon=True).start()
for _ in range(100):
    with open(os.path.join(logdir, "audit.log")) as f:
        if '"request_id":"lost-1"' in f.read():
            break
    time.sleep(0.05)
else:
    fail("the attempt line of lost-1 never appeared")
daemon.kill()
daemon.wait(timeout=10)

files = sorted(os.listdir(logdir))
if not any(f.endswith(".gz") for f in files) or len(files) < 3:
    fail(f"the log did not rotate twice with compression: {files}")
lines = []
for name in files:
    opener = gzip.open if name.endswith(".gz") else open
    with opener(os.path.join(logdir, name), "rt") as f:
        lines += [json.loads(line) for line in f if line.strip()]
requests = [r for r in lines if r["event"] == "request"]
print(f"# audit log: {files}, {len(lines)} lines, {len(requests)} requests")


# --- the questions, answered here ----------------------------------------------------------------
def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def number(x):
    return str(int(x)) if float(x).is_integer() else repr(x)


def expect_request():
    return sorted(compact(r) for r in lines if r.get("request_id") == "demo-3")


def expect_client():
    a = [compact([r["ts"], r["request_id"], r["status"], r["provider"]]) for r in requests if r["client"] == "billing"]
    b = [compact([r["ts"], r["request_id"], r["status"]]) for r in requests if r["client_ip"] == "127.0.0.1"]
    return sorted(a + b)


def expect_failovers():
    out = [compact([r["ts"], r["request_id"], [f'{a["provider"]}:{a["outcome"]}' for a in r["attempts"]]])
           for r in requests if len({a["provider"] for a in r["attempts"]}) > 1]
    if not out:
        fail("the log has no failover to look for")
    return sorted(out)


def expect_latency():
    calls = [a for r in requests for a in r["attempts"] if a["outcome"] != "skipped"]
    if not any(a["outcome"] == "skipped" for r in requests for a in r["attempts"]):
        fail("the log has no skipped attempt: the recipe's filter is not put to the test")
    out = []
    for provider in sorted({a["provider"] for a in calls}):
        a = sorted((c["latency_ms"] for c in calls if c["provider"] == provider))
        out.append(f"{provider} n={len(a)} p50={number(a[len(a) // 2])} p99={number(a[int(len(a) * 0.99)])} ms")
    return sorted(out)


def expect_unknown():
    by_id = {}
    for r in lines:
        by_id.setdefault(r.get("request_id"), []).append(r["event"])
    return sorted(i for i, events in by_id.items() if all(e == "attempt" for e in events))


def expect_control():
    out = [compact([r["ts"], r["client"], r["action"], r.get("provider"), r["reason"]]) for r in lines if r["event"] == "control"]
    if len(out) != 2:
        fail(f"expected 2 control lines, the log has {len(out)}")
    return sorted(out)


def alice_hash(address):
    return hmac.new(KEY.encode(), address.lower().encode(), hashlib.sha256).hexdigest()[:32]


def expect_alice():
    h = alice_hash("alice@example.org")
    out = [compact([r["ts"], r["request_id"], r["status"], r["provider"]]) for r in requests if h in r.get("recipient_hashes", [])]
    if not out or len(out) == len(requests):
        fail(f"alice is in {len(out)} of {len(requests)} requests: not a question worth asking")
    return sorted(out)


checks = {
    "Everything about one request": expect_request,
    "One client": expect_client,
    "Failovers in the last hour": expect_failovers,
    "p50/p99 latency of provider calls": expect_latency,
    "Mails whose outcome is unknown": expect_unknown,
    "Who switched a provider off or on": expect_control,
    '"Did we send to alice@example.org?"': expect_alice,
}

# --- the recipes, from the README, as written ----------------------------------------------------
with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
block = re.search(r"\nRecipes \(.*?```sh\n(.*?)```", readme, re.S)
if not block:
    fail("no recipe block in the README")
recipes = []
for chunk in block.group(1).strip().split("\n\n"):
    comment = [line[2:] for line in chunk.splitlines() if line.startswith("# ")]
    script = "\n".join(line for line in chunk.splitlines() if not line.startswith("#"))
    recipes.append((comment[0] if comment else "", script))


def run(script, extra_env=None):
    script = script.replace("/var/log/mailrelayd/", logdir + "/").replace("10.1.2.3", "127.0.0.1")
    script = re.sub(r"\bmailrelayd hash-address\b", DAEMON + " hash-address", script)
    run_env = dict(os.environ, CREDENTIALS_DIRECTORY=creds)
    run_env.update(extra_env or {})
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=run_env, timeout=60)


failures = 0
for title, script in recipes:
    check = next((c for prefix, c in checks.items() if title.startswith(prefix)), None)
    if not check:
        fail(f"the README recipe '{title}' has no check in {__file__}")
    out = run(script)
    got = sorted(line for line in out.stdout.splitlines() if line.strip())
    want = check()
    if out.returncode != 0 or got != want:
        failures += 1
        print(f"not ok - {title}\n  exit {out.returncode}, stderr: {out.stderr.strip()}\n  got:  {got}\n  want: {want}")
    else:
        print(f"ok - {title} ({len(got)} lines)")
    if title.startswith('"Did we send'):
        # Somebody never sent to: nothing. No key at hand: an error, and nothing searched.
        nobody = run(script.replace("alice@example.org", "nobody@example.org"))
        if nobody.stdout.strip():
            failures += 1
            print(f"not ok - the recipe for nobody@example.org printed {nobody.stdout!r}")
        nokey_dir = os.path.join(work, "nokey")
        os.makedirs(nokey_dir, exist_ok=True)
        nokey = run(script, {"CREDENTIALS_DIRECTORY": nokey_dir})
        if nokey.returncode == 0 or nokey.stdout.strip() or "no recipient key" not in nokey.stderr:
            failures += 1
            print(f"not ok - without a key the recipe exited {nokey.returncode} and printed {nokey.stdout[:200]!r}")
        else:
            print("ok - without a key the recipe fails and prints nothing")

stop_all()
shutil.rmtree(work, ignore_errors=True)
if failures:
    print(f"FAIL: {failures} recipe checks")
    sys.exit(1)
print(f"all {len(recipes)} recipes answer right")
