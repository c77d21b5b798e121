#!/usr/bin/python3
"""Property-based test of the HTTP API against its own OpenAPI document (README "API").

Requests are generated from the document the daemon serves (GET /v1/openapi.json) with
Hypothesis, against a real mailrelayd on the outbox provider, with the state in memory or in a
real redis-server on a free loopback port:

    tests/property/run.py build/mailrelayd memory|redis [--examples N] [--seconds S]

For every operation it asserts: no 5xx; every answer is one the document describes, its body
valid against the documented schema (tools/check_answers.py's check); a send, or a batch, whose
body the document's schema accepts is accepted (200); an operation that requires a token refuses
an anonymous call (401). It follows the document's links (send -> getMessage), and checks that
every operation has an example and that every example is valid against its schema.

Generation is derandomised (the same cases every run: no flaky CI) and bounded: --examples cases
per operation, and no more than --seconds in all. Every process started is stopped by its PID.
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings, strategies as st
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from check_answers import check, resolve  # noqa: E402

SEND_TOKEN = "prop-send-token-0123456789"
ADMIN_TOKEN = "prop-admin-token-0123456789"
FORMATS = FormatChecker()


def ecma_pattern(validator, pattern, instance, schema):
    """"pattern" as ECMA-262 reads it: "$" is the end of the string. Python's re also lets "$"
    match before a final newline, which would call "abc\n" valid where the daemon (rightly) says
    no."""
    if not validator.is_type(instance, "string"):
        return
    match = re.search(pattern, instance)
    anchored = pattern.endswith("$") and not pattern.endswith("\\$")
    if not match or (anchored and match.end() != len(instance)):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})

# ---- strategies from JSON Schema (the subset the document uses) ----

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
ADDR_SPEC = st.builds(
    lambda local, labels: local + "@" + ".".join(labels),
    st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=3).map(".".join),
    st.lists(LABEL, min_size=1, max_size=3))
DISPLAY = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>\"\\"), max_size=12)
NAME_ADDR = st.builds(lambda name, addr: f"{name} <{addr}>", DISPLAY, ADDR_SPEC)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
MAX_ITEMS = 3  # generated arrays stay small: the document's maxItems are far above


def strategy(schema, spec, depth=0):
    """A Hypothesis strategy for values `schema` accepts (generation only: validity is checked
    by the caller with the schema itself)."""
    schema = resolve(schema, spec)
    if depth > 6:
        return st.just(None)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "allOf" in schema:  # the document uses allOf to add a bound to a $ref
        merged = {}
        for part in schema["allOf"]:
            merged.update(resolve(part, spec))
        merged.update({k: v for k, v in schema.items() if k != "allOf"})
        return strategy(merged, spec, depth)
    if "anyOf" in schema and "type" not in schema and "properties" not in schema or "oneOf" in schema:
        return st.one_of([strategy(s, spec, depth + 1) for s in schema.get("anyOf", schema.get("oneOf"))])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        return st.one_of([strategy({**schema, "type": k}, spec, depth) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -1000), schema.get("maximum", 1000))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e6), schema.get("maximum", 1e6), allow_nan=False)
    if kind == "string":
        return string_strategy(schema)
    if kind == "array":
        items = strategy(schema.get("items", {}), spec, depth + 1)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS)))
    return object_strategy(schema, spec, depth)


def string_strategy(schema):
    fmt = schema.get("format")
    if fmt == "email":
        return ADDR_SPEC
    if fmt == "name-addr":
        return NAME_ADDR
    if fmt == "date-time":
        return st.just("2026-12-06T16:00:00.000Z")
    low, high = schema.get("minLength", 0), min(schema.get("maxLength", 20), 20)
    if "pattern" in schema:
        pattern = schema["pattern"]
        base = st.from_regex(pattern, fullmatch=True) if "(?" not in pattern else TEXT
        return base.filter(lambda s: low <= len(s) <= schema.get("maxLength", 10**9) and re.search(pattern, s))
    return st.text(st.characters(blacklist_categories=("Cs",)), min_size=low, max_size=max(low, high))


def object_strategy(schema, spec, depth):
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = {k: strategy(v, spec, depth + 1) for k, v in props.items() if k in required}
    optional = {k: strategy(v, spec, depth + 1) for k, v in props.items() if k not in required}
    extra = schema.get("additionalProperties")
    names = schema.get("propertyNames")
    free = st.just({})
    if isinstance(extra, dict) and not props:
        key = string_strategy(resolve(names, spec)) if names else st.text("abcxyz-", min_size=1, max_size=8)
        if names and "not" in names:
            banned = resolve(names["not"], spec)
            key = key.filter(lambda k: not Validator(banned).is_valid(k))
        free = st.dictionaries(key, strategy(extra, spec, depth + 1), max_size=MAX_ITEMS)
    return st.fixed_dictionaries(fixed, optional=optional).flatmap(lambda d: free.map(lambda f: {**f, **d}))


# ---- the daemon and the store ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process stopped by its PID, at most 10 s after SIGTERM, then SIGKILL."""

    def __init__(self, argv, env=None):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_daemon(binary, workdir, store_url):
    tokens = workdir / "tokens"
    tokens.write_text(f"app:{SEND_TOKEN}\nops:{ADMIN_TOKEN}:admin\n")
    argv = [binary, "--listen", "127.0.0.1:0", "--providers", "outbox", "--outbox-dir", str(workdir / "outbox"),
            "--tokens-file", str(tokens), "--audit-log", str(workdir / "audit.log"), "--state-store", store_url,
            "--max-body-bytes", "1000000"]
    env = dict(os.environ, MAILGUN_WEBHOOK_SIGNING_KEY="fake-mailgun-signing-key",
               POSTMARK_WEBHOOK_CREDENTIALS="postmark:fake-webhook-password")
    daemon = Process(argv, env)
    for _ in range(300):  # at most 15 s
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", daemon.output())
        if match:
            return daemon, int(match.group(1))
        if daemon.proc.poll() is not None:
            break
        time.sleep(0.05)
    daemon.stop()
    raise SystemExit("mailrelayd did not start:\n" + daemon.output())


def start_redis(workdir):
    port = free_port()
    redis = Process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(workdir)])
    for _ in range(200):  # at most 10 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return redis, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    redis.stop()
    raise SystemExit("redis-server did not start:\n" + redis.output())


# ---- requests and checks ----

class Api:
    def __init__(self, port, spec=None):
        self.port, self.spec, self.problems, self.calls = port, spec, [], 0
        self.cases = {}  # operationId -> generated cases sent

    def call(self, method, path, token=None, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            sent["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        self.calls += 1
        content_type = response.getheader("Content-Type", "")
        answer = {"method": method, "path": path.split("?")[0], "status": response.status,
                  "content_type": content_type, "headers": dict(response.getheaders()),
                  "body": json.loads(raw) if raw and content_type.startswith("application/json") else None}
        if self.spec is not None:
            self.expect(response.status < 500, answer, "a 5xx")
            problem = check(self.spec, answer)
            self.expect(problem is None, answer, problem)
        return answer

    def expect(self, ok, answer, what):
        if not ok and len(self.problems) < 20:
            body = json.dumps(answer.get("body"))[:300]
            self.problems.append(f"{answer['method']} {answer['path']} -> {answer['status']}: {what}: {body}")


def operations(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "operationId" in op:
                params = list(item.get("parameters", [])) + op.get("parameters", [])
                yield path, method.upper(), op, [p for p in params if p.get("in") == "path"]


def protected(spec, op):
    requirements = op.get("security", spec.get("security", []))
    return not any(r == {} for r in requirements) and any("bearer" in r for r in requirements)


def request_strategy(spec, path, op, path_params):
    parts = {p["name"]: strategy(p["schema"], spec).map(lambda v: urllib.parse.quote(str(v), safe="@"))
             for p in path_params}
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    body_strategy = strategy(body, spec) if body else st.none()
    return st.tuples(st.fixed_dictionaries(parts), body_strategy).map(
        lambda t: (re.sub(r"\{([^}]+)\}", lambda m: t[0][m.group(1)], path), t[1], body))


def token_for(op):
    return ADMIN_TOKEN if op.get("tags") in (["control"], ["events"]) else SEND_TOKEN


def check_examples(spec, problems):
    """Every operation has an example; every example is valid against its schema."""
    def media_examples(node):
        for media in resolve(node, spec).get("content", {}).values():
            if "example" in media:
                yield media["example"], media.get("schema", {})
    for path, method, op, _ in operations(spec):
        found = list(media_examples(op.get("requestBody", {})))
        for response in op.get("responses", {}).values():
            found += list(media_examples(response))
        if not found:
            problems.append(f"{method} {path}: no example")
        for example, schema in found:
            errors = list(Validator(resolve(schema, spec), format_checker=FORMATS).iter_errors(example))
            if errors:
                problems.append(f"{method} {path}: example invalid: {errors[0].message}")


def run_operation(api, spec, path, method, op, path_params, examples, until):
    body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    validator = Validator(resolve(body_schema, spec), format_checker=FORMATS) if body_schema else None
    is_send = op["operationId"] in ("send", "sendBatch")

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request_strategy(spec, path, op, path_params))
    def case(request):
        target, body, _ = request
        if time.monotonic() > until:
            return
        if validator is not None and body is not None and not validator.is_valid(body):
            assume(False)  # the generator's rough cut: only schema-valid bodies are sent
        if op["operationId"] == "sendBatch":
            # Keys are the client's to keep unique (a reused one replays or is refused 422): each
            # case gets its own.
            for message in body["messages"]:
                if "idempotency_key" in message:
                    message["idempotency_key"] = f"{api.calls}-{message['idempotency_key']}"[:255]
        answer = api.call(method, target, token_for(op), body)
        api.cases[op["operationId"]] = api.cases.get(op["operationId"], 0) + 1
        if is_send:
            api.expect(answer["status"] == 200, answer, "a schema-valid send was not accepted")
            if answer["status"] == 200 and op["operationId"] == "send":
                follow_link(api, spec, op, answer)
        if protected(spec, op):
            anonymous = api.call(method, target, None, body)
            api.expect(anonymous["status"] == 401, anonymous, "a protected operation answered an anonymous call")
        if op["operationId"] == "switchProvider":  # the outbox is the only provider: keep sends going
            api.call("PATCH", "/v1/providers/outbox", ADMIN_TOKEN, {"enabled": True})
    case()


def follow_link(api, spec, op, answer):
    for link in op["responses"]["200"].get("links", {}).values():
        value = answer["body"][link["parameters"]["request_id"].split("#/")[1]]
        target = next(p for p, _, o, _ in operations(spec) if o["operationId"] == link["operationId"])
        linked = api.call("GET", target.replace("{request_id}", urllib.parse.quote(value)), SEND_TOKEN)
        api.expect(linked["status"] == 200, linked, "the link from the send did not lead to its message")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("store", choices=["memory", "redis"])
    parser.add_argument("--examples", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    until = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis, url = start_redis(workdir) if args.store == "redis" else (None, "memory")
        daemon = None
        try:
            daemon, port = start_daemon(args.binary, workdir, url)
            spec = Api(port).call("GET", "/v1/openapi.json")["body"]
            api = Api(port, spec)
            check_examples(spec, api.problems)
            ops = sorted(operations(spec), key=lambda o: o[2].get("tags") == ["control"])  # sends before switches
            for path, method, op, path_params in ops:
                run_operation(api, spec, path, method, op, path_params, args.examples, until)
        finally:
            if daemon:
                daemon.stop()
            if redis:
                redis.stop()
    print(f"{api.calls} requests on {args.store}, {len(ops)} operations, "
          f"{'out of time' if time.monotonic() > until else 'all cases run'}; cases sent per operation:")
    print("  " + ", ".join(f"{name} {n}" for name, n in sorted(api.cases.items())))
    starved = [path for path, _, op, params in ops
               if (params or "requestBody" in op) and api.cases.get(op["operationId"], 0) < min(10, args.examples // 2)]
    if starved and time.monotonic() <= until:
        api.problems.append(f"too few schema-valid cases generated for {', '.join(starved)}")
    for problem in api.problems:
        print("  " + problem, file=sys.stderr)
    return 1 if api.problems else 0


if __name__ == "__main__":
    sys.exit(main())
