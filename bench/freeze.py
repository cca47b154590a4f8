#!/usr/bin/env python3
"""A frozen process of the sidecar's own tree, and what the tree costs at rest: before and after, in one run.

Each process of the tree is frozen in turn (SIGSTOP): anycastd, ExaBGP, ExaBGP's API helper;
then the resolver, without clients (the probes alone find it) and with clients' queries
(``CLIENTS`` per second to the service address, which fill its receive queue). Each trial does
it on one server (rotating over the three), at a random phase of its schedules, and times it
until that server's path leaves the router's kernel FIB (polled every 2 ms); then undoes it
(thaws the process; a stopped ExaBGP or helper anycastd replaces by itself) and times it until
the path is back. A killed (and restarted) resolver is timed likewise, to show the fast path
did not move. Before any of that, the CPU of each server's anycastd, ExaBGP and helper at rest
(no fault, no client traffic).

``--base REV`` checks REV out into a git worktree and measures it and this tree alternately,
``--rounds`` labs each; each tree runs with PYTHONPATH set to itself, so the lab and the daemons
are that tree's code. Prints a table and writes it into docs/benchmarks.md.

    python bench/freeze.py [--base REV] [--rounds 1] [--trials 10] [--cpu-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import alternate, before_after_options, context, cpu_percent, publish
from resources import roles

from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import SERVICE_V4, Server

HERE = Path(__file__).resolve()

#: (name, goal for the max in s, how to do it to a server, how to undo it, clients' queries per second)
Fault = tuple[str, float, Callable[[BgpLab, Server], None], Callable[[BgpLab, Server], None], float]


def _stop(pid: int | None) -> None:
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)


def _replaced(lab: BgpLab, server: Server) -> None:
    """Nothing to undo: anycastd replaces a stopped ExaBGP (or helper) with a fresh one."""


def _thaw_resolver(lab: BgpLab, server: Server) -> None:
    lab.signal_resolver(server, signal.SIGCONT)


#: Queries per second from the client to the service address, spread over the three servers by ECMP.
CLIENTS = 300.0
ADDRESS = SERVICE_V4.split("/")[0]

FAULTS: list[Fault] = [
    (
        "anycastd frozen (SIGSTOP)",
        0.5,
        lambda lab, s: lab.signal_anycastd(s, signal.SIGSTOP),
        lambda lab, s: lab.signal_anycastd(s, signal.SIGCONT),
        0.0,
    ),
    ("ExaBGP frozen (SIGSTOP)", 0.5, lambda lab, s: _stop(lab.exabgp_pid(s)), _replaced, 0.0),
    ("ExaBGP's helper frozen (SIGSTOP)", 0.5, lambda lab, s: _stop(lab.helper_pid(s)), _replaced, 0.0),
    (
        "resolver frozen (SIGSTOP), no client",
        1.0,
        lambda lab, s: lab.signal_resolver(s, signal.SIGSTOP),
        _thaw_resolver,
        0.0,
    ),
    (
        f"resolver frozen (SIGSTOP), clients at {CLIENTS:g}/s",
        0.3,
        lambda lab, s: lab.signal_resolver(s, signal.SIGSTOP),
        _thaw_resolver,
        CLIENTS,
    ),
    (
        "resolver killed (SIGKILL)",
        0.25,
        lambda lab, s: lab.kill_resolver(s),
        lambda lab, s: lab.start_resolver(s, wait=False),
        0.0,
    ),
]
ROLES = ("anycastd", "exabgp", "exabgp helper")


def at_rest(lab: BgpLab, seconds: float) -> dict[str, float]:
    """Each role's CPU over ``seconds``, as a share of one core, averaged over the servers."""
    pids = roles(lab)
    cpu = cpu_percent([p for role in ROLES for p in pids[role]], seconds)
    return {role: statistics.mean(cpu[p] for p in pids[role]) for role in ROLES}


def measure(trials: int, cpu_window: float, only: str = "") -> dict[str, Any]:
    with BgpLab() as lab:
        time.sleep(5)  # past start-up
        out: dict[str, Any] = {"cpu": at_rest(lab, cpu_window), "faults": {}, "back": {}}
        for name, _, fault, undo, clients in FAULTS:
            if only not in name:
                continue
            times: list[float | None] = []
            back: list[float | None] = []
            for trial in range(trials):
                victim = lab.servers[trial % len(lab.servers)]
                client = lab.client(ADDRESS, int(clients * 30), clients) if clients else None
                time.sleep(random.uniform(0.5, 0.9) if clients else random.uniform(0.2, 0.6))
                t0 = time.monotonic()
                fault(lab, victim)
                try:
                    lab.wait_server(victim, present=False, timeout=10)
                    times.append(time.monotonic() - t0)
                except TimeoutError:
                    times.append(None)
                t1 = time.monotonic()
                undo(lab, victim)
                try:  # thawed or replaced, the path back (a fresh ExaBGP: its session established)
                    lab.wait_server(victim, present=True, timeout=30)
                    back.append(time.monotonic() - t1)
                except TimeoutError:
                    back.append(None)
                if client is not None:
                    client.kill()
                    client.wait()
                lab.restore()
                said = f"{times[-1] * 1000:.0f} ms" if times[-1] is not None else "no change within 10 s"
                print(f"  {name}: trial {trial + 1}/{trials} on {victim.name}: {said}", flush=True)
            out["faults"][name] = times
            out["back"][name] = back
        return out


def table(runs: dict[str, list[dict[str, Any]]], trees: list[str]) -> list[str]:
    rows = ["| measure | goal | " + " | ".join(trees) + " |", "|---|---:|" + "---:|" * len(trees)]
    for name, goal, _, _, _ in FAULTS:
        if name not in runs[trees[-1]][0]["faults"]:
            continue
        for kind, label, limit in (("faults", f"{name} -> path gone", goal), ("back", f"{name}: undone -> back", None)):
            cells = []
            for tree in trees:
                times = [t for run in runs[tree] for t in run[kind][name]]
                got = [t * 1000 for t in times if t is not None]
                missed = len(times) - len(got)
                text = f"{statistics.median(got):,.0f} / {max(got):,.0f}" if got else "-"
                met = limit is None or (got and max(got) <= limit * 1000 and not missed)
                cells.append(text + (f" ({missed} missed)" if missed else "") + ("" if met else " (**not met**)"))
            goal_text = f"max <= {limit * 1000:.0f} ms" if limit is not None else ""
            rows.append(f"| {label}, median / max ms | {goal_text} | " + " | ".join(cells) + " |")
    for role in (*ROLES, "all three"):
        cells = []
        for tree in trees:
            values = [sum(run["cpu"].values()) if role == "all three" else run["cpu"][role] for run in runs[tree]]
            figure = f"{statistics.mean(values):.2f}"
            cells.append(f"**{figure}**" if role == "all three" else figure)
        cpu_goal = "<= 1.5" if role == "all three" else ""
        rows.append(f"| CPU at rest, {role}, % of a core | {cpu_goal} | " + " | ".join(cells) + " |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    before_after_options(parser, rounds=1)
    parser.add_argument("--trials", type=int, default=10, help="trials per fault and lab (default 10)")
    parser.add_argument("--cpu-seconds", type=float, default=30.0, help="the CPU sample (default 30 s)")
    parser.add_argument("--only", default="", help="only the faults named with this (writes nothing)")
    args = parser.parse_args()
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(args.trials, args.cpu_seconds, args.only)))
        return 0
    if os.geteuid() != 0:
        print("bench/freeze.py needs root (network namespaces)", file=sys.stderr)
        return 1
    argv = ["--trials", str(args.trials), "--cpu-seconds", str(args.cpu_seconds), "--only", args.only]
    names, runs = alternate(HERE, argv, args.base, args.rounds)
    command = f"python bench/freeze.py --rounds {args.rounds} --trials {args.trials} --cpu-seconds {args.cpu_seconds:g}"
    if args.base:
        command += f" --base {args.base}"
    publish(
        "bench/freeze.py",
        [
            "## A frozen process of the sidecar's tree, and the tree's cost at rest (`bench/freeze.py`)",
            "",
            f"Command: `{command}` (as root).",
            context(),
            "Each trial freezes (SIGSTOP) one process on one of the three servers, at a random phase, and times "
            "it until that server's path leaves the router's kernel FIB (polled every 2 ms); the lab is made whole "
            f"after each. {args.trials} trials per fault and lab, {args.rounds} lab(s) per tree, the trees "
            f"alternating. CPU is utime + stime over {args.cpu_seconds:g} s at rest (no fault, no client traffic), "
            "the mean over the three servers, as a share of one core; the lab's check is the default (a probe "
            "every 0.2 s).",
            "",
            "\n".join(table(runs, names)),
        ],
        not args.no_write and not args.only,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
