#!/usr/bin/env python3
"""Writes mailrelayd(8) from docs/mailrelayd.8.in and `mailrelayd --help`, so that the man page
and the daemon never disagree: the OPTIONS section is the help text, option for option.

    tools/manpage.py build/mailrelayd > docs/mailrelayd.8          # regenerate
    tools/manpage.py --check build/mailrelayd docs/mailrelayd.8    # the test: exit 1 on a difference
"""
import re
import subprocess
import sys
from pathlib import Path

OPTION = re.compile(r"^  (-h,)?--([a-z0-9-]+)(?: ([A-Z]+)(?::[A-Z]+)?(?:=(.*?))?)?(?: \.\.\.)?(?: \(Env:([A-Z0-9_]+)\))?$")


def roff(text):
    """Plain text as roff: backslashes, hyphens and a leading dot or quote escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def options_section(help_text):
    out, lines = [], help_text.splitlines()
    for i, line in enumerate(lines):
        m = OPTION.match(line)
        if not m:
            continue
        _, name, kind, default, env = m.groups()
        description = []
        for follow in lines[i + 1:]:
            if not follow.startswith(" " * 30) or OPTION.match(follow):
                break
            description.append(follow.strip())
        head = "\\fB\\-\\-" + name.replace("-", "\\-") + "\\fR"
        if kind:
            head += " \\fI" + kind + "\\fR"
        out += [".TP", head, roff(" ".join(description))]
        notes = []
        if default:
            notes.append("default " + default)
        if env:
            notes.append("environment " + env)
        if notes:
            out.append("(" + roff("; ".join(notes)) + ")")
    return "\n".join(out)


def render(binary, template):
    help_text = subprocess.run([binary, "--help"], check=True, capture_output=True, text=True).stdout
    return template.read_text().replace("@OPTIONS@", options_section(help_text))


def main(argv):
    check = argv[:1] == ["--check"]
    args = argv[1:] if check else argv
    template = Path(__file__).resolve().parent.parent / "docs" / "mailrelayd.8.in"
    page = render(args[0], template)
    if not check:
        sys.stdout.write(page)
        return 0
    if Path(args[1]).read_text() == page:
        return 0
    print("docs/mailrelayd.8 disagrees with `mailrelayd --help`; regenerate it:\n"
          "  tools/manpage.py build/mailrelayd > docs/mailrelayd.8", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
