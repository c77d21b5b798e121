#!/usr/bin/env python3
"""Validates every answer the e2e tests received (tests/e2e/daemon.h records them) against
docs/openapi.yaml, so that the document cannot drift from the daemon:

    tools/check_answers.py docs/openapi.yaml build/tests/e2e-answers

Each answer must belong to a documented operation and status (or be one of the errors the
document says apply everywhere: 404 on an unknown path, 405 with Allow, 400/411/413/415 for
malformed HTTP), and its JSON body must match the schema. Exit 1 with the first problems.
"""
import json
import re
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

# Errors the document says may answer any request: malformed HTTP and internal errors; 404 and
# 405 only where no operation matches (an unknown path, another method).
FRAMING_ERRORS = {400, 411, 413, 414, 415, 500}


def resolve(node, spec, depth=0):
    """The node with every local $ref replaced by what it points to."""
    if depth > 50:
        raise ValueError("$ref nesting too deep")
    if isinstance(node, dict):
        if "$ref" in node:
            target = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve(target, spec, depth + 1)
        return {k: resolve(v, spec, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, spec, depth) for v in node]
    return node


def operation_for(spec, method, path):
    """(path template, path item) for `path`: exact paths before templated ones."""
    items = spec["paths"]
    if path in items:
        return path, items[path]
    for template, item in items.items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template, item
    return None, None


def outside_enum(template, item, path):
    """True when a path parameter's value is not one its schema enumerates (no such resource)."""
    names = re.findall(r"\{([^/]+?)\}", template)
    pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(template)) + "$"
    match = re.match(pattern, path)
    if not names or not match:
        return False
    declared = list(item.get("parameters", []))
    for operation in item.values():
        if isinstance(operation, dict):
            declared += operation.get("parameters", [])
    for parameter in declared:
        enum = parameter.get("schema", {}).get("enum")
        if parameter.get("in") == "path" and enum and parameter["name"] in names:
            if match.group(names.index(parameter["name"]) + 1) not in enum:
                return True
    return False


def check(spec, answer):
    method, path, status = answer["method"].lower(), answer["path"], answer["status"]
    content_type = answer.get("content_type", "")
    headers = answer.get("headers", {})
    body = answer.get("body")
    # The document says HEAD is GET without a body, wherever GET is.
    head = method == "head"
    if head:
        method = "get"
    where = f"{answer['method']} {path} -> {status}"
    template, item = operation_for(spec, method, path)
    operation = item.get(method) if item else None
    if content_type == "application/json":
        if "X-Request-Id" not in headers:
            return f"{where}: no X-Request-Id header"
        replay = headers.get("Idempotent-Replayed") == "true"  # the first answer's body, its request id too
        if isinstance(body, dict) and "request_id" in body and body["request_id"] != headers["X-Request-Id"] and not replay:
            return f"{where}: request_id in the body differs from X-Request-Id"
    if operation is None or str(status) not in operation.get("responses", {}):
        unknown = item is None or outside_enum(template, item, path)
        allowed = FRAMING_ERRORS | ({404} if unknown else {405} if operation is None else set())
        if status not in allowed:
            return f"{where}: not documented ({'no such operation' if operation is None else 'no such status'})"
        if status == 405 and "Allow" not in headers:
            return f"{where}: 405 without Allow"
        schema = {"$ref": "#/components/schemas/Error"}
    else:
        response = resolve(operation["responses"][str(status)], spec)
        content = response.get("content", {})
        if not content:
            return None
        media = content_type.split(";")[0].strip()
        if media not in content:
            return f"{where}: Content-Type {content_type!r} not documented ({', '.join(content)})"
        if media != "application/json":
            return None
        schema = content[media].get("schema", {})
        for name, header in response.get("headers", {}).items():
            if header.get("required") and name not in headers:
                return f"{where}: required header {name} missing"
            if name in headers and "schema" in header:
                errors = list(Draft202012Validator(resolve(header["schema"], spec)).iter_errors(headers[name]))
                if errors:
                    return f"{where}: header {name}: {errors[0].message}"
    if head:
        return f"{where}: HEAD answered with a body" if body is not None else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("code") == "unauthorized" and "WWW-Authenticate" not in headers:
        return f"{where}: 401 unauthorized without WWW-Authenticate"
    errors = sorted(Draft202012Validator(resolve(schema, spec)).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        return f"{where}: body at /{'/'.join(map(str, e.path))}: {e.message}"
    return None


def main(argv):
    spec = yaml.safe_load(Path(argv[0]).read_text())
    answers = []
    for f in sorted(Path(argv[1]).glob("answers-*.jsonl")):
        answers += [json.loads(line) for line in f.read_text().splitlines() if line]
    if len(answers) < 50:
        print(f"only {len(answers)} recorded answers in {argv[1]}: did the e2e tests run?", file=sys.stderr)
        return 1
    problems = [p for p in (check(spec, a) for a in answers) if p]
    operations = {(a["method"], operation_for(spec, a["method"].lower(), a["path"])[0]) for a in answers}
    print(f"{len(answers)} answers, {len(operations)} operations checked against {argv[0]}")
    for p in sorted(set(problems))[:20]:
        print("  " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
