#!/usr/bin/env python3
"""docs/openapi.yaml is the HTTP API's contract; docs/openapi.json is the same document as JSON,
compiled into the daemon (GET /v1/openapi.json). Edit the YAML, then regenerate:

    tools/openapi.py > docs/openapi.json
    tools/openapi.py --check      # the test: exit 1 when docs/openapi.json is out of date
"""
import json
import sys
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"


def render():
    spec = yaml.safe_load((DOCS / "openapi.yaml").read_text())
    return json.dumps(spec, indent=1, ensure_ascii=False) + "\n"


def main(argv):
    if argv[:1] != ["--check"]:
        sys.stdout.write(render())
        return 0
    if (DOCS / "openapi.json").read_text() == render():
        return 0
    print("docs/openapi.json is out of date; regenerate it: tools/openapi.py > docs/openapi.json", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
