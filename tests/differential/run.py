#!/usr/bin/env python3
"""The daemon's HTTP/1.1 parser against one nobody here wrote: the same raw bytes go to the
daemon's front door (echo_server, the real FrontDoor) and to Node's http server (llhttp, strict),
each of which echoes what it parsed of every request (method, target, body length). Both must
take the same requests with the same boundaries and refuse at the same one, or the case is
listed below with the reason RFC 9112 allows both.

    run.py ECHO_SERVER NODE_SERVER_JS FUZZ_CORPUS_DIR

The corpus: the security review's cases (issue 34), the framing fuzzer's corpus, and variants
generated from valid requests (a byte of each class put in each part of the head, chunk sizes
and extensions, line endings, repeated fields). Each case is sent on its own connection, followed
by a probe request, then the client half-closes; loopback only, every wait bounded.
"""
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import time

# Cases where the verdicts may differ, and why RFC 9112 allows both (or why ours is the stricter).
ALLOWED = {
    "two Host fields": "RFC 9112 section 3.2: a server MUST answer 400 to more than one Host; "
                       "Node's server does not look (it keeps the first)",
    "Connection: CLOSE": "RFC 9112 section 9.6: the request that says close is answered, and what follows "
                         "it is not processed (ours); llhttp refuses the connection's data after it whole",
    "HTTP/1.0 GET": "the same as Connection: close (an HTTP/1.0 request without keep-alive is the last), "
                    "with the probe after it",
    "16 leading zeros in a chunk size": "SPEC section 20: a chunk size of more than 16 hex digits is refused "
                                        "(RFC 9112 section 7.1: guard against overflow); llhttp takes leading zeros",
    "a chunk size of 17 digits": "as for 16 leading zeros",
    "fuzz corpus: chunk-17-digits.txt": "as for 16 leading zeros",
    "fuzz corpus: connection-close-upper.txt": "as for Connection: CLOSE (the file ends after that request: "
                                               "the probe follows it)",
    "two spaces after the method": "RFC 9112 section 3: a single SP between the parts, which recipients MAY "
                                   "relax; ours does not",
    "Transfer-Encoding gzip, chunked": "RFC 9112 section 6.1: a transfer coding the server does not understand "
                                       "is refused; we decode chunked alone, llhttp passes the body on still coded",
    "a trailer field line with obs-fold": "RFC 9112 section 5.2 lets a server reject obs-fold anywhere; "
                                          "llhttp does not parse trailer fields strictly",
    "a trailer line with a space before the colon": "RFC 9112 section 5.1: no whitespace before the colon; "
                                                    "llhttp does not parse trailer fields strictly",
}


def body_chunks(body, size):
    out = b""
    for at in range(0, len(body), size):
        piece = body[at:at + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def corpus(fuzz_dir):
    cases = []
    head = b"POST /v1/send HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    body = b'{"from":"a@example.com","to":["b@example.org"],"subject":"s","text":"t"}'
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n"
    get = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    # The review's findings (issue 34), as reproduced.
    cases += [
        ("chunk data followed by XX", chunked + b"%x\r\n" % len(body) + body + b"XX\r\n0\r\n\r\n"),
        ("a 0x chunk size", chunked + b"0x%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"),
        ("LF inside a value", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\nContent-Length: 35\r\n\r\n" + get),
        ("Connection: CLOSE", b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: CLOSE\r\n\r\n" + get),
        ("16 leading zeros in a chunk size", chunked + b"0" * 16 + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" + get),
        ("a chunk extension ending in a bare LF", chunked + b"%x;ext\n" % len(body) + body + b"\r\n0\r\n\r\n"),
        ("a chunk size with a leading space", chunked + b" %x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"),
        ("DEL inside a value", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n"),
        ("no Host", b"GET /healthz HTTP/1.1\r\n\r\n"),
        ("two Host fields", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ]
    # Valid requests, and pipelines of them.
    valid = [
        ("GET", get),
        ("HTTP/1.0 GET", b"GET /healthz HTTP/1.0\r\n\r\n"),
        ("POST with a length", head + b"Content-Length: %d\r\n\r\n" % len(body) + body),
        ("POST chunked", chunked + body_chunks(body, 16)),
        ("POST chunked, upper-case hex, extensions, a trailer", chunked + b"1A;a=b;c\r\n" + body[:26] + b"\r\n"
         + b"%X\r\n" % (len(body) - 26) + body[26:] + b"\r\n0\r\nX-Trailer: v\r\n\r\n"),
        ("empty lines before a request", b"\r\n\r\n" + get),
        ("a value with tabs and obs-text", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: \ta b\xe9\t\r\n\r\n"),
        ("Expect: 100-continue", head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body) + body),
        ("a query", b"GET /healthz?a=1&b=%20 HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"),
    ]
    cases += valid
    cases.append(("a pipeline of every valid request", b"".join(v for _, v in valid if not v.startswith(b"GET /healthz HTTP/1.0"))))
    # One byte of each class in each part of a valid head.
    base = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: value\r\n\r\n"
    places = {"method": 1, "target": 6, "version": 18, "field name": 34, "field value": 38}
    for byte, label in [(b"\x00", "NUL"), (b"\r", "CR"), (b"\n", "LF"), (b"\x7f", "DEL"), (b"\x01", "SOH"),
                        (b" ", "space"), (b"\t", "tab"), (b"\xff", "obs-text"), (b"(", "a separator")]:
        for part, at in places.items():
            cases.append((f"{label} in the {part}", base[:at] + byte + base[at:]))
    # Line endings and folds.
    cases += [
        ("a bare LF ending the request line", b"GET /healthz HTTP/1.1\nHost: t\r\n\r\n"),
        ("LF-only line endings", b"GET /healthz HTTP/1.1\nHost: t\n\n"),
        ("obs-fold", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"),
        ("a space before the colon", b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n"),
        ("a tab before the colon", b"GET /healthz HTTP/1.1\r\nHost\t: t\r\n\r\n"),
        ("no colon", b"GET /healthz HTTP/1.1\r\nHost: t\r\nnocolon\r\n\r\n"),
        ("an empty field name", b"GET /healthz HTTP/1.1\r\nHost: t\r\n: v\r\n\r\n"),
        ("two spaces after the method", b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("lower-case version", b"GET /healthz http/1.1\r\nHost: t\r\n\r\n"),
        ("a target without a slash", b"GET healthz HTTP/1.1\r\nHost: t\r\n\r\n"),
    ]
    # Framing fields.
    cases += [
        ("two equal Content-Lengths", head + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
        ("Content-Length 4%36", head + b"Content-Length: 4%36\r\n\r\n" + body),
        ("a signed Content-Length", head + b"Content-Length: +2\r\n\r\n{}"),
        ("Content-Length and chunked", head + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("Transfer-Encoding gzip", head + b"Transfer-Encoding: gzip\r\n\r\n"),
        ("Transfer-Encoding gzip, chunked", head + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("Transfer-Encoding CHUNKED", head + b"Transfer-Encoding: CHUNKED\r\n\r\n" + body_chunks(body, 40)),
    ]
    # Chunk sizes and chunk lines.
    for label, line in [("a chunk size with 15 leading zeros", b"0" * 15 + b"2"), ("a chunk size of 17 digits", b"0" * 16 + b"2"),
                        ("a negative chunk size", b"-2"), ("a chunk size with a trailing space", b"2 "),
                        ("a chunk size with a tab", b"\t2"), ("a chunk size in 0X", b"0X2"), ("an empty chunk size", b""),
                        ("a chunk extension with a NUL", b"2;a\x00"), ("a chunk extension with a value", b"2;a=\"b c\"")]:
        cases.append((label, chunked + line + b"\r\n{}\r\n0\r\n\r\n" + get))
    cases += [
        ("a chunk without its CRLF", chunked + b"2\r\n{}0\r\n\r\n" + get),
        ("a chunk followed by LF only", chunked + b"2\r\n{}\n0\r\n\r\n" + get),
        ("a last chunk without the final CRLF", chunked + b"2\r\n{}\r\n0\r\n" + get),
        ("a trailer field line with obs-fold", chunked + b"2\r\n{}\r\n0\r\nX: a\r\n b\r\n\r\n" + get),
        ("a trailer line with a space before the colon", chunked + b"2\r\n{}\r\n0\r\nX : a\r\n\r\n" + get),
    ]
    # The framing fuzzer's corpus, as it is.
    if os.path.isdir(fuzz_dir):
        for name in sorted(os.listdir(fuzz_dir)):
            with open(os.path.join(fuzz_dir, name), "rb") as f:
                data = f.read()
            if len(data) <= 200000:
                cases.append((f"fuzz corpus: {name}", data))
    return cases


PROBE = b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n"


def exchange(port, data):
    """The echoes in order, then 'refused <status>' or 'closed': what the server made of `data`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            s.sendall(data + PROBE)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raw = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                got = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not got:
                break
            raw += got
    finally:
        s.close()
    out = []
    while raw:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            break
        head = raw[:end].decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = raw[end + 4:end + 4 + length]
        raw = raw[end + 4 + length:]
        if status == 100:
            continue
        if status != 200:
            out.append(f"refused {status // 100}xx")
            break
        echo = json.loads(body)
        out.append(f"{echo['method']} {echo['target']} {echo['length']}")
    if not out or not out[-1].startswith("refused"):
        out.append("closed")
    return out


def start(command):
    p = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    return p, port


def main():
    echo_server, node_js, fuzz_dir = sys.argv[1:4]
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        print("node is not installed: differential test skipped")
        return 77
    ours, our_port = start([echo_server])
    theirs, their_port = start([node, node_js])
    try:
        cases = corpus(fuzz_dir)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda c: (c[0], exchange(our_port, c[1]), exchange(their_port, c[1])), cases))
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait(timeout=10)
    differ, allowed = 0, 0
    for name, mine, node_says in results:
        # A refusal is a refusal: the status class is compared, and a server that closes without
        # an answer on a request it cannot take refuses it too.
        norm = lambda r: ["refused" if x.startswith("refused") or x == "closed" else x for x in r]
        if norm(mine) == norm(node_says):
            continue
        if name in ALLOWED:
            allowed += 1
            print(f"allowed: {name}: daemon {mine}, node {node_says} ({ALLOWED[name]})")
            continue
        differ += 1
        print(f"DIFFER: {name}: daemon {mine}, node {node_says}")
    for name in ALLOWED:
        if name not in [r[0] for r in results]:
            print(f"DIFFER: allowed case {name!r} is not in the corpus")
            differ += 1
    agreed = len(results) - differ - allowed
    print(f"{agreed} agreed, {allowed} differ with a stated reason, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
