#!/usr/bin/env python3
"""Audit-log faults under load: the daemon (outbox provider) driven by bench_load, one fault at a
time; acknowledged requests against request lines (audit files plus the stderr fallback), every
line parsed, latencies and signal delays.

    sudo python3 tests/bench/audit_faults.py [--build build] [full] [rotate] [reopen] [signals]

`full` mounts a 1 MiB tmpfs (root only). Loopback only; every process started is stopped."""
import glob, json, os, re, signal, subprocess, sys, tempfile, threading, time

args = sys.argv[1:]
BUILD = os.path.abspath(args[args.index("--build") + 1] if "--build" in args else "build")
args = [a for i, a in enumerate(args) if a != "--build" and (i == 0 or args[i - 1] != "--build")]
BODY = os.path.join(tempfile.mkdtemp(), "body.json")
json.dump({"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}, open(BODY, "w"))

def start(audit, extra=()):
    d = tempfile.mkdtemp()
    err = open(os.path.join(d, "err"), "w")
    p = subprocess.Popen([BUILD + "/mailrelayd", "--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir",
                          os.path.join(d, "outbox"), "--audit-log", audit, *extra], stderr=err)
    for _ in range(500):
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(err.name).read())
        if m: return p, int(m.group(1)), err.name
        time.sleep(0.02)
    raise SystemExit("no start")

def load(port, conns, secs):
    out = subprocess.run([BUILD + "/tests/bench/bench_load", "--port", str(port), "--connections", str(conns),
                          "--duration", str(secs), "--body", BODY], capture_output=True, text=True, timeout=secs + 60).stdout
    return json.loads(out)

def lines(paths, errfile):
    good, bad = [], 0
    for p in paths:
        for l in open(p, errors="replace").read().splitlines():
            try: good.append(json.loads(l))
            except Exception: bad += 1
    for m in re.finditer(r"the line follows: (\{.*\})", open(errfile).read()):
        good.append(json.loads(m.group(1)))
    return good, bad

def stop(p):
    t = time.time(); p.send_signal(signal.SIGTERM); rc = p.wait(30); return rc, time.time() - t

def report(name, r, good, bad, extra=""):
    ok = r["by_status"].get("200", {}).get("count", 0)
    req200 = sum(1 for l in good if l.get("event") == "request" and l.get("status") == 200 and l.get("path") == "/v1/send")
    st = {k: v["count"] for k, v in r["by_status"].items()}
    p99 = max((v["p99_ms"] for v in r["by_status"].values()), default=0)
    print(f"{name}: statuses {st}, acknowledged {ok}, request lines (200) {req200}, unparsable lines {bad}, "
          f"worst status p99 {p99:.0f} ms {extra}", flush=True)

which = args or ["full", "rotate", "reopen", "signals"]
if "full" in which:
    mnt = tempfile.mkdtemp(); subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], check=True)
    p, port, err = start(mnt + "/audit.log", ["--audit-log-max-bytes", "0"])
    r = load(port, 64, 5); rc, t = stop(p)
    good, bad = lines([mnt + "/audit.log"], err)
    report("disk full (1 MiB tmpfs, 64 clients, 5 s)", r, good, bad, f"exit {rc} in {t:.2f} s")
    subprocess.run(["umount", mnt])
if "rotate" in which:
    d = tempfile.mkdtemp(); os.makedirs(d + "/audit.log.1/keep")
    p, port, err = start(d + "/audit.log", ["--audit-log-max-bytes", "100000", "--audit-log-max-files", "1"])
    r = load(port, 64, 5); rc, t = stop(p)
    good, bad = lines(glob.glob(d + "/audit.log*[!1]") + [d + "/audit.log"], err)
    fails = open(err).read().count("rotation failed")
    report("rotation blocked (64 clients, 5 s)", r, good, bad, f"; {fails} rotation-failed lines; exit {rc} in {t:.2f} s")
if "reopen" in which:
    d = tempfile.mkdtemp()
    p, port, err = start(d + "/audit.log", ["--audit-log-max-bytes", "0"])
    res = {}
    th = threading.Thread(target=lambda: res.update(load(port, 64, 5))); th.start()
    time.sleep(1); os.rename(d + "/audit.log", d + "/moved"); os.mkdir(d + "/audit.log")
    p.send_signal(signal.SIGUSR1); time.sleep(1.5); os.rmdir(d + "/audit.log"); th.join()
    rc, t = stop(p)
    good, bad = lines([d + "/moved", d + "/audit.log"], err)
    e = open(err).read()
    ids = [l["request_id"] for l in good if l.get("event") == "request"]
    print(f"  request lines {len(ids)}, distinct ids {len(set(ids))} (answers after the client's deadline are not counted by it)")
    report("reopen onto a directory, fixed 1.5 s later (64 clients)", res, good, bad,
           f"; SIGUSR1 said: {'could not reopen' in e}; reopen failures logged {e.count('still writing to the file open before')}; exit {rc}")
if "signals" in which:
    d = tempfile.mkdtemp()
    p, port, err = start(d + "/audit.log", ["--audit-log-max-bytes", "0"])
    res = {}
    th = threading.Thread(target=lambda: res.update(load(port, 256, 6))); th.start()
    time.sleep(1.5); delays = []
    for i in range(10):
        n0 = open(err).read().count("reopened the audit log"); t0 = time.time(); p.send_signal(signal.SIGUSR1)
        while open(err).read().count("reopened the audit log") == n0 and time.time() - t0 < 5: time.sleep(0.002)
        delays.append((time.time() - t0) * 1000); time.sleep(0.1)
    t0 = time.time(); p.send_signal(signal.SIGHUP)
    while "reloaded configuration" not in open(err).read() and time.time() - t0 < 5: time.sleep(0.002)
    hup = (time.time() - t0) * 1000
    time.sleep(0.5); t0 = time.time(); p.send_signal(signal.SIGTERM); rc = p.wait(30); term = time.time() - t0
    th.join(); good, bad = lines([d + "/audit.log"], err)
    report("signals under 256 clients", res, good, bad,
           f"; SIGUSR1 logged after median {sorted(delays)[5]:.1f} ms, worst {max(delays):.1f} ms; SIGHUP {hup:.1f} ms; SIGTERM exit {rc} after {term*1000:.0f} ms")
