"""Shared by the bench scripts: the run's context line and docs/benchmarks.md sections."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def arguments(
    doc: str | None, script: str, add: Callable[[argparse.ArgumentParser], None]
) -> argparse.Namespace | None:
    """Parse a bench script's arguments; None (after saying why) when not run as root."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add(parser)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(f"{script} needs root (network namespaces)", file=sys.stderr)
        return None
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    print("building the lab ...", flush=True)
    return args


def _on_sigterm(main: int) -> Callable[[int, FrameType | None], None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the lab's context manager tears it down.

    Only in this process: pyroute2 forks short-lived children to open sockets in a namespace and
    ends them with SIGTERM. A fork inherits this handler and a copy of our stack, so unwinding
    there would run the copied lab's teardown and kill the real lab's daemons; it exits at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main:
            os._exit(128 + signum)
        sys.exit(128 + signum)

    return handler


def context() -> str:
    return (
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}."
    )


def publish(script: str, lines: list[str], write: bool) -> None:
    """Print a section and, unless told not to, put it into docs/benchmarks.md."""
    body = "\n".join(lines)
    print()
    print(body)
    if write:
        write_section(script, body)


def write_section(script: str, body: str) -> None:
    """Replace this script's section of docs/benchmarks.md (or append it), leaving the others alone."""
    start, end = f"<!-- {script}:start -->", f"<!-- {script}:end -->"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)
    print(f"\nwritten to {DOCS}")
