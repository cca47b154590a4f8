"""Write debian/changelog from CHANGELOG.md (Keep a Changelog): one entry per released version, newest
first, and the version being built (anycastd/__init__.py) on top, from its own section or from
[Unreleased]. `make deb` runs it; the package's changelog is never edited by hand.

Usage: python scripts/debian_changelog.py [--version V] > debian/changelog
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")
KIND = re.compile(r"^### (?P<kind>\w+)")
PACKAGE = "anycastd-dns"


@dataclass
class Section:
    version: str
    date: str | None
    items: list[str] = field(default_factory=list)


def sections(text: str) -> list[Section]:
    """The changelog's version sections, in file order, each with its items as "Kind: text"."""
    found: list[Section] = []
    kind = ""
    for line in text.splitlines():
        if m := SECTION.match(line):
            found.append(Section(m["version"], m["date"]))
            kind = ""
        elif not found:
            continue
        elif m := KIND.match(line):
            kind = m["kind"]
        elif line.startswith("- "):
            found[-1].items.append(f"{kind}: {line[2:].strip()}" if kind else line[2:].strip())
        elif line.startswith("  ") and found[-1].items:
            found[-1].items[-1] += " " + line.strip()
    return found


def maintainer() -> str:
    control = (ROOT / "debian" / "control").read_text()
    m = re.search(r"^Maintainer: (.+)$", control, re.MULTILINE)
    if m is None:
        raise SystemExit("debian/control: no Maintainer field")
    return m.group(1).strip()


def build_time() -> float:
    """SOURCE_DATE_EPOCH, or the last commit's time, or now: the same tree gives the same changelog."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return float(os.environ["SOURCE_DATE_EPOCH"])
    git = shutil.which("git")
    try:
        out = subprocess.run([git or "git", "log", "-1", "--format=%ct"], check=False, cwd=ROOT, capture_output=True)
        return float(out.stdout.strip())
    except (OSError, ValueError):
        return time.time()


def entry(version: str, distribution: str, items: list[str], when: float, who: str) -> str:
    body = []
    for item in items or ["No change recorded in CHANGELOG.md."]:
        plain = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", item)  # links keep their text
        body.extend(textwrap.wrap(plain, width=76, initial_indent="  * ", subsequent_indent="    "))
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))  # RFC 5322, as dpkg wants it
    return f"{PACKAGE} ({version}) {distribution}; urgency=medium\n\n" + "\n".join(body) + f"\n\n -- {who}  {stamp}\n"


def render(text: str, version: str, when: float, who: str) -> str:
    found = sections(text)
    by_version = {s.version: s for s in found}
    entries = []
    current = by_version.get(version)
    if current is None:
        unreleased = by_version.get("Unreleased")
        entries.append(entry(version, "UNRELEASED", unreleased.items if unreleased else [], when, who))
    for s in found:
        if s.version == "Unreleased":
            continue
        date = time.mktime(time.strptime(s.date, "%Y-%m-%d")) if s.date else when
        entries.append(entry(s.version, "unstable", s.items, date, who))
    return "\n".join(entries)


def current_version() -> str:
    m = re.search(r'^__version__ = "([^"]+)"', (ROOT / "anycastd" / "__init__.py").read_text(), re.MULTILINE)
    if m is None:
        raise SystemExit("anycastd/__init__.py: no __version__")
    return m.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=None, help="the version being built (default: anycastd's own)")
    args = parser.parse_args(argv)
    sys.stdout.write(
        render((ROOT / "CHANGELOG.md").read_text(), args.version or current_version(), build_time(), maintainer())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
