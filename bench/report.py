"""Shared by the bench scripts: the run's context line, docs/benchmarks.md sections, a process's CPU,
and the before/after runner.

Before and after: ``alternate`` checks a base revision out into a git worktree and runs a script's
``--measure FILE`` mode in it and in this tree by turns, each with PYTHONPATH and the working
directory set to that tree, so that the lab and the daemons it starts are that tree's code, and a
machine that gets busier during the run weighs on both alike. The measuring script is this tree's,
in both: its lab API must be one the base's code also runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
TICK = os.sysconf("SC_CLK_TCK")

Runs = dict[str, list[dict[str, Any]]]


def _ticks(pid: int) -> list[int]:
    """utime, stime, cutime and cstime from /proc/PID/stat, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return [int(x) for x in fields[11:15]]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime; with ``children``, also that of reaped children (dig, run by a health checker)."""
    return sum(_ticks(pid)[: 4 if children else 2]) / TICK


def cpu_percent(pids: Iterable[int], seconds: float, children: bool = False) -> dict[int, float]:
    """Each process's CPU over the next ``seconds`` (slept here), as a share of one core in %."""
    before = {pid: cpu_seconds(pid, children) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    return {pid: (cpu_seconds(pid, children) - used) / wall * 100 for pid, used in before.items()}


def cpu_split(pid: int, seconds: float) -> tuple[float, float]:
    """The process's user and system CPU over the next ``seconds`` (slept here), each as a share of one core
    in %. System time includes the kernel's work done in the process's name: in a lab of veths, a datagram's
    whole delivery to the receiving namespace, and the waking of the process that reads it."""
    (user, system, _, _), started = _ticks(pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    user_after, system_after, _, _ = _ticks(pid)
    return (user_after - user) / TICK / wall * 100, (system_after - system) / TICK / wall * 100


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def revision(rev: str) -> str:
    """``rev``'s short commit id."""
    out = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def alternate(script: Path, argv: list[str], base: str | None, rounds: int) -> tuple[list[str], Runs]:
    """Run ``script --measure FILE *argv`` ``rounds`` times in this tree and, given ``base``, as often in
    base's, by turns (base first); the JSON each run wrote, under its tree's name, and the names in order
    ("before (REV)", then "after (HEAD and this tree)")."""
    names = [f"after ({revision('HEAD')} and this tree)"]
    runs: Runs = {}
    with tempfile.TemporaryDirectory(prefix="anycastd-before-") as tmp:
        trees = [ROOT]
        if base:
            before = Path(tmp) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(before), revision(base)], cwd=ROOT, check=True)
            names.insert(0, f"before ({revision(base)})")
            trees.insert(0, before)
        try:
            for round_ in range(rounds):
                for name, tree in zip(names, trees, strict=True):
                    print(f"round {round_ + 1}: {name} ({tree}) ...", flush=True)
                    runs.setdefault(name, []).append(_measured(script, argv, tree))
        finally:
            if base:
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "tree")], cwd=ROOT, check=False)
    return names, runs


def _measured(script: Path, argv: list[str], tree: Path) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, str(script), "--measure", result.name, *argv], cwd=tree, env=env, check=True)
        data: dict[str, Any] = json.loads(Path(result.name).read_text())
        return data


def before_after_options(
    parser: argparse.ArgumentParser, rounds: int, unit: str = "labs", base: str | None = None
) -> None:
    """The options of a script that measures two trees by turns (``alternate``): ``--base``, ``--rounds``,
    ``--measure`` (how ``alternate`` runs it in each tree) and ``--no-write``."""
    help_base = "the tree before the change (a git revision)" + ("" if base else "; none: this tree alone")
    parser.add_argument("--base", default=base, help=help_base)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"{unit} per tree, by turns (default {rounds})")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")


def arguments(
    doc: str | None, script: str, add: Callable[[argparse.ArgumentParser], object]
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
