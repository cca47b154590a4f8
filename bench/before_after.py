#!/usr/bin/env python3
"""Before and after a change, in one run: detection and CPU of both daemons, each tree on its own lab.

A change that is meant to change no behaviour (issue 28 moved every module into layer folders and
wrote the daemons' shared code once) must leave detection and cost within their noise. This
checks out ``--base`` into a git worktree and measures it and this tree alternately, ``--rounds``
times each, so that a machine that gets busier during the run weighs on both alike:

* sidecar lab (anycastd on three servers): the CPU of each server's anycastd and its ExaBGP at
  rest over ``--cpu-seconds``; then ``--trials`` times each, s1's resolver killed (SIGKILL) and
  frozen (SIGSTOP, no client traffic: the probes' schedule alone finds it), timed from the fault
  until s1's path leaves the router's kernel FIB (polled every 2 ms), and back after the undo;
* router lab (`anycastd router`): its CPU at rest, and s1's resolver killed, likewise.

Each tree runs with PYTHONPATH set to itself, so the lab and the daemons it starts are that
tree's code; this script imports nothing of anycastd's, only the lab's API, the same in both.

    python bench/before_after.py --base 525a1a3 [--rounds 2] [--trials 5] [--cpu-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import alternate, before_after_options, context, cpu_percent, publish, revision

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.static import StaticLab

HERE = Path(__file__).resolve()


def timed(
    lab: Any, server: Any, act: Callable[[], None], undo: Callable[[], None]
) -> tuple[float | None, float | None]:
    """Seconds from ``act`` until ``server``'s path leaves the FIB, and from ``undo`` until it is back."""
    time.sleep(0.3)
    at = time.monotonic()
    act()
    gone = None
    while time.monotonic() - at < 5.0:
        if server.name not in lab.server_paths():
            gone = time.monotonic() - at
            break
        time.sleep(0.002)
    at = time.monotonic()
    undo()
    back = None
    while gone is not None and time.monotonic() - at < 5.0:
        if server.name in lab.server_paths():
            back = time.monotonic() - at
            break
        time.sleep(0.002)
    return gone, back


def measure(trials: int, cpu_window: float) -> dict[str, Any]:
    """One tree's figures (runs in a child process whose PYTHONPATH is that tree: its lab, its daemons)."""
    out: dict[str, Any] = {}
    with BgpLab() as lab:
        time.sleep(5)  # past start-up: the steady state
        anycastd = [lab.lab.processes[daemons.anycastd_key(s)].pid for s in lab.servers]
        exabgp = [lab.exabgp_pid(s) or 0 for s in lab.servers]
        cpu = cpu_percent(anycastd + exabgp, cpu_window)
        out["sidecar cpu"] = [cpu[p] for p in anycastd]
        out["exabgp cpu"] = [cpu[p] for p in exabgp]
        s1 = lab.servers[0]
        faults = {
            "sidecar killed": (lambda: lab.kill_resolver(s1), lambda: lab.start_resolver(s1, wait=False)),
            "sidecar frozen": (
                lambda: lab.signal_resolver(s1, signal.SIGSTOP),
                lambda: lab.signal_resolver(s1, signal.SIGCONT),
            ),
        }
        for name, (act, undo) in faults.items():
            for _ in range(trials):
                out.setdefault(name, []).append(timed(lab, s1, act, undo))
                lab.restore()
    with StaticLab() as lab:
        time.sleep(5)
        out["router cpu"] = list(cpu_percent([lab.lab.processes[daemons.ROUTER_KEY].pid], cpu_window).values())
        s1 = lab.servers[0]
        for _ in range(trials):
            out.setdefault("router killed", []).append(
                timed(lab, s1, lambda: lab.kill_resolver(s1), lambda: lab.start_resolver(s1, wait=False))
            )
            lab.restore()
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}" if values else "-"


def table(label: str, runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        f"| measure (median / max) | {label} before | after |",
        "|---|---:|---:|",
    ]
    for key in ("sidecar killed", "sidecar frozen", "router killed"):
        for i, what in ((0, "path out of the FIB, ms"), (1, "back in the FIB, ms")):
            cells = []
            for tree in ("before", "after"):
                values = [t[i] for run in runs[tree] for t in run[key] if t[i] is not None]
                missed = sum(1 for run in runs[tree] for t in run[key] if t[i] is None)
                cells.append(ms(values) + (f" ({missed} missed)" if missed else ""))
            rows.append(f"| {key}: {what} | {cells[0]} | {cells[1]} |")
    for key in ("sidecar cpu", "exabgp cpu", "router cpu"):
        cells = []
        for tree in ("before", "after"):
            values = [v for run in runs[tree] for v in run[key]]
            cells.append(f"{statistics.mean(values):.2f} / {max(values):.2f}")
        name = {"sidecar cpu": "anycastd (sidecar)", "exabgp cpu": "its ExaBGP", "router cpu": "anycastd router"}[key]
        rows.append(f"| {name} at rest, CPU % of one core (mean / max) | {cells[0]} | {cells[1]} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    before_after_options(parser, rounds=2, base="525a1a3")
    parser.add_argument("--trials", type=int, default=5, help="trials per fault per lab (default 5)")
    parser.add_argument("--cpu-seconds", type=float, default=20.0, help="the CPU sample per lab (default 20 s)")
    args = parser.parse_args()
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(args.trials, args.cpu_seconds)))
        return 0
    if os.geteuid() != 0:
        print("bench/before_after.py needs root (network namespaces)", file=sys.stderr)
        return 1
    argv = ["--trials", str(args.trials), "--cpu-seconds", str(args.cpu_seconds)]
    (before, after), named = alternate(HERE, argv, args.base, args.rounds)
    runs = {"before": named[before], "after": named[after]}
    base, head = revision(args.base), revision("HEAD")
    n = args.rounds * args.trials
    publish(
        "bench/before_after.py",
        [
            "## Before and after the house was reordered (issue 28): detection and CPU in one run",
            "",
            f"Command: `python bench/before_after.py --base {base} --rounds {args.rounds} --trials {args.trials} "
            f"--cpu-seconds {args.cpu_seconds:g}` (as root), comparing {base} (before) with {head} "
            "(after).",
            context(),
            f"Each tree ran {args.rounds} sidecar labs and {args.rounds} router labs, alternating with the other tree; "
            f"{n} trials per fault and tree. Times are from the fault (or its undo) until the router's kernel FIB "
            "changed, polled every 2 ms; the frozen resolver had no client traffic. CPU is utime + stime over "
            f"{args.cpu_seconds:g} s at rest, per process (3 sidecars and 3 ExaBGPs per lab).",
            "",
            "\n".join(table(f"{base}", runs)),
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
