#!/usr/bin/env python3
"""Detection, side by side: a resolver killed or frozen, until its path leaves the router's kernel FIB.

The sidecar lab runs anycastd (`failure_action: withdraw`, like for like with `exabgp healthcheck
--withdraw-on-down`) on s1 and s3 and `exabgp healthcheck` with its fastest options on s2; each trial
kills (SIGKILL) or freezes (SIGSTOP) the resolver of s1 or s2 while the lab's client sends RATE queries a
second to the service address, each its own flow. The router's FIB is polled every 2 ms. For anycastd,
its log says when it decided, which splits each time into detection (the fault until the verdict) and
propagation (the verdict until the FIB: ExaBGP, BGP and bgpd's work queue). The propagation is the floor
no detection can go below. "Frozen, idle" freezes the resolver with no client traffic, so that no
receive queue can grow: the probes' schedule alone finds it.

Then the router-side lab: `anycastd router` with its default checks, the same faults on s1, and the
verdict until the FIB is its VTY session to staticd, zebra and the kernel.

Prints tables, writes them into docs/benchmarks.md between this script's markers, and draws for each
fault a timeline of the median trial (FIB paths, answered and lost queries per 10 ms) and the
distribution of times across trials, as PNGs in docs/img/.

    python bench/detection.py [--trials N] [--quick]
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from compare import HC_FASTEST, Controller
from fleet import WITHDRAW, Fleet
from report import DOCS, arguments, context, publish

from anycastd.config.checks import Check
from anycastd_lab.base import DnsLab
from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import SERVICE_V4, Server

RATE = 500  # queries per second from the client during a trial
ADDRESS = SERVICE_V4.split("/")[0]
IMAGES = DOCS.parent / "img"
BIN = 0.010  # seconds per bar of the timelines
ROUTER = Controller(
    "anycastd router (static routes)", None, cast(float, Check.__dataclass_fields__["interval"].default)
)
#: "s1: up -> down (...)", "dns: falling -> down (...)", "dns/s1: up -> down (...)": the verdict in the log.
VERDICT = re.compile(r"^(\S+ \S+) \w+ \S+: (?:dns|dns/s\d+): \w+ -> down ", re.MULTILINE)


@dataclass
class Trial:
    total: float | None  # the fault until the server's path left the FIB
    verdict: float | None  # the fault until anycastd decided (from its log); None for exabgp healthcheck
    back: float | None  # the undo (restart, SIGCONT) until the path was back
    fib: list[tuple[float, int]]  # (seconds from the fault, paths in the FIB)
    queries: list[tuple[float, bool]]  # (seconds from the fault, answered)


@dataclass
class Results:
    trials: dict[tuple[str, str], list[Trial]] = field(default_factory=dict)  # (controller, fault) -> trials


@dataclass(frozen=True)
class Fault:
    name: str
    act: Callable[[DnsLab, Server], None]
    undo: Callable[[DnsLab, Server], None]
    load: bool = True


FAULTS = [
    Fault("killed", lambda lab, s: lab.kill_resolver(s), lambda lab, s: lab.start_resolver(s, wait=False)),
    Fault(
        "frozen",
        lambda lab, s: lab.signal_resolver(s, signal.SIGSTOP),
        lambda lab, s: lab.signal_resolver(s, signal.SIGCONT),
    ),
    Fault(
        "frozen, idle",
        lambda lab, s: lab.signal_resolver(s, signal.SIGSTOP),
        lambda lab, s: lab.signal_resolver(s, signal.SIGCONT),
        load=False,
    ),
]


def verdict_at(log: str, wall_at_fault: float, pattern: re.Pattern[str] = VERDICT) -> float | None:
    """Seconds from the fault to the first "-> down" in ``log`` (anycastd's own clock, to the millisecond);
    ``pattern``'s first group is the line's time."""
    match = pattern.search(log)
    if match is None:
        return None
    at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return at - wall_at_fault


def run_trial(
    lab: DnsLab, s: Server, fault: Fault, window: float, log: Callable[[], tuple[int, Callable[[int], str]]] | None
) -> Trial:
    """One fault on ``s`` under load; the FIB and the queries around it."""
    load = lab.client(ADDRESS, int(RATE * (window + 0.5)), RATE, timeline=True) if fault.load else None
    offset, read_log = log() if log is not None else (0, None)
    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        time.sleep(0.4)
        wall, fault_at = time.time(), time.monotonic()
        fault.act(lab, s)
        gone = None
        while time.monotonic() - fault_at < window:
            if s.name not in lab.server_paths():
                gone = time.monotonic() - fault_at
                break
            time.sleep(0.002)
        undo_at = time.monotonic()
        fault.undo(lab, s)
        back = None
        while gone is not None and time.monotonic() - undo_at < 5.0:
            if s.name in lab.server_paths():
                back = time.monotonic() - undo_at
                break
            time.sleep(0.002)
        time.sleep(0.3)
    verdict = verdict_at(read_log(offset), wall) if read_log is not None else None
    fib = [(at - fault_at, len(hops)) for at, hops in watch.changes]
    queries: list[tuple[float, bool]] = []
    if load is not None:
        result = lab.client_result(load, timeout=window + 60)
        start = float(result["start"])
        queries = [(start + sent - fault_at, who is not None) for sent, who in result["timeline"]]
    return Trial(gone, verdict, back, fib, queries)


def sidecar(r: Results, trials: int) -> None:
    with BgpLab() as lab:
        fleet = Fleet(lab)
        fleet.assign({"s1": WITHDRAW, "s2": HC_FASTEST, "s3": WITHDRAW})
        for controller, s in ((WITHDRAW, lab.servers[0]), (HC_FASTEST, lab.servers[1])):
            anycastd = controller.healthcheck is None
            window = 1.5 if anycastd else 6.0
            for fault in FAULTS:
                if fault.name == "frozen, idle" and not anycastd:
                    continue
                key = (controller.label, fault.name)
                print(f"{key[0]}: {fault.name} x {trials} ...", flush=True)
                for _ in range(trials):
                    log = (lambda s=s: (lab.log_size(s), lambda o, s=s: lab.log_since(s, o))) if anycastd else None
                    r.trials.setdefault(key, []).append(run_trial(lab, s, fault, window, log))
                    fleet.restore()


def router(r: Results, trials: int) -> None:
    with StaticLab() as lab:
        s = lab.servers[0]
        for fault in FAULTS:
            key = (ROUTER.label, fault.name)
            print(f"{key[0]}: {fault.name} x {trials} ...", flush=True)
            for _ in range(trials):
                r.trials.setdefault(key, []).append(
                    run_trial(lab, s, fault, 1.5, lambda: (lab.log_size(), lab.log_since))
                )
                lab.restore()


# reporting --------------------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def row(label: str, fault: str, ts: list[Trial]) -> str:
    totals = [t.total for t in ts]
    known = [t for t in totals if t is not None]
    propagation = [t.total - t.verdict for t in ts if t.total is not None and t.verdict is not None]
    floor = statistics.median(propagation) if propagation else None
    lost = sum(1 for t in ts for at, ok in t.queries if not ok and at >= 0)
    sent = sum(1 for t in ts for at, _ in t.queries if at >= 0)
    med = median(totals)
    ratio = f"{med / floor:.1f}" if med is not None and floor else "-"
    return (
        f"| {label} | {fault} | {ms(med)} | {ms(max(known) if known else None)} | "
        f"{len(known)} of {len(ts)} | {ms(median([t.verdict for t in ts]))} | {ms(floor)} | {ratio} | "
        f"{lost} of {sent} | {ms(median([t.back for t in ts]))} |"
    )


def median_trial(ts: list[Trial]) -> Trial | None:
    known = sorted((t for t in ts if t.total is not None), key=lambda t: t.total or 0.0)
    return known[len(known) // 2] if known else None


def draw(r: Results) -> list[str]:
    """The PNGs: per fault, the median trial's timeline for each controller; and the distributions."""
    import matplotlib  # noqa: PLC0415 (only the benchmark needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    IMAGES.mkdir(exist_ok=True)
    written = [timeline(plt, r, fault) for fault in FAULTS]
    return [*(w for w in written if w), distribution(plt, r)]


def timeline(plt: Any, r: Results, fault: Fault) -> str | None:
    """The median trial of each controller for ``fault``: FIB paths, answered and lost queries per 10 ms."""
    rows = [(label, ts) for (label, f), ts in r.trials.items() if f == fault.name]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.6 * len(rows)), squeeze=False)
    for ax, (label, ts) in zip(axes[:, 0], rows, strict=True):
        t = median_trial(ts)
        if t is None:
            continue
        end = max(1.0, (t.total or 1.0) + 0.4)
        bins = int((end + 0.3) / BIN)
        answered, lost = [0] * bins, [0] * bins
        for at, ok in t.queries:
            i = int((at + 0.3) / BIN)
            if 0 <= i < bins:
                (answered if ok else lost)[i] += 1
        xs = [(-0.3 + i * BIN) * 1000 for i in range(bins)]
        ax.bar(xs, answered, width=BIN * 1000, align="edge", color="tab:green", label="answered / 10 ms")
        ax.bar(xs, lost, width=BIN * 1000, align="edge", bottom=answered, color="tab:red", label="lost / 10 ms")
        ax.set_ylabel("queries")
        paths = ax.twinx()
        steps = [(-300.0, t.fib[0][1] if t.fib else 3)] + [(at * 1000, n) for at, n in t.fib if at >= -0.3]
        steps.append((end * 1000, steps[-1][1]))
        paths.step([x for x, _ in steps], [n for _, n in steps], where="post", color="black", label="FIB paths")
        paths.set_ylim(0, 3.5)
        paths.set_ylabel("FIB paths")
        ax.axvline(0, color="grey", linestyle=":")
        ax.set_xlim(-300, end * 1000)
        ax.set_title(f"{label}: resolver {fault.name} at 0 ms, path gone after {ms(t.total)} (median trial)")
        ax.legend(loc="lower left", fontsize=7)
    axes[-1, 0].set_xlabel("ms from the fault")
    fig.tight_layout()
    path = IMAGES / f"detection-{fault.name.replace(', ', '-')}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def distribution(plt: Any, r: Results) -> str:
    """Every trial's time for each controller and fault: a box and the points."""
    fig, axes = plt.subplots(1, len(FAULTS), figsize=(12, 3.5), squeeze=False)
    for ax, fault in zip(axes[0], FAULTS, strict=True):
        rows = [
            (label, [t.total * 1000 for t in ts if t.total is not None])
            for (label, f), ts in r.trials.items()
            if f == fault.name
        ]
        rows = [(label, v) for label, v in rows if v]
        if rows:
            ax.boxplot([v for _, v in rows], vert=False)
            for i, (_, v) in enumerate(rows, start=1):
                ax.scatter(v, [i] * len(v), s=10, color="tab:blue", zorder=3)
            ax.set_yticks(range(1, len(rows) + 1), [label.split(",")[0] for label, _ in rows], fontsize=7)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
        ax.set_title(f"resolver {fault.name}: path gone after (ms)", fontsize=9)
    fig.tight_layout()
    fig.savefig(IMAGES / "detection-distribution.png", dpi=80)
    plt.close(fig)
    return "detection-distribution.png"


def report(r: Results, trials: int, images: list[str], elapsed: float) -> list[str]:
    lines = [
        "## Detection, side by side: a resolver killed or frozen, until its path leaves the FIB",
        "",
        f"Command: `python bench/detection.py --trials {trials}` (as root, {elapsed / 60:.0f} min; "
        "`make bench` runs it).",
        context(),
        f"anycastd and `exabgp healthcheck` ({HC_FASTEST.healthcheck}) on the sidecar lab, then `anycastd router`",
        f"on the router-side lab; the client sends {RATE} queries/s to {ADDRESS}, each its own flow; the FIB is",
        "polled every 2 ms. *Verdict*: from anycastd's log, the fault until it decided. *Floor*: the verdict",
        "until the FIB (median), what no detection can go below (ExaBGP, BGP and bgpd's 50 ms work queue;",
        "for the router, its VTY session, zebra and the kernel). *Lost*: queries sent after the fault and",
        "never answered (1 s timeout). *Back*: the undo (restart, SIGCONT) until the path was back.",
        "",
        "| controller | fault | median | max | gone in | verdict (median) | floor | median / floor | lost | back |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row(label, fault, ts) for (label, fault), ts in r.trials.items()]
    lines += ["", "Goals (issue 18) against what this run measured:", ""]
    lines += ["| goal | measured | met |", "|---|---:|:---:|"]

    def goal(text: str, key: tuple[str, str], pick: Callable[[list[Trial]], float | None], bound: float) -> None:
        value = pick(r.trials.get(key, []))
        met = "yes" if value is not None and value <= bound else "**no**"
        lines.append(f"| {text} | {ms(value)} | {met} |")

    def worst(ts: list[Trial]) -> float | None:
        known = [t.total for t in ts if t.total is not None]
        return max(known) if len(known) == len(ts) and known else None

    def worst_verdict(ts: list[Trial]) -> float | None:
        known = [t.verdict for t in ts if t.verdict is not None]
        return max(known) if len(known) == len(ts) and known else None

    a = WITHDRAW.label
    goal(
        "sidecar: killed -> out of the FIB, median <= 100 ms",
        (a, "killed"),
        lambda ts: median([t.total for t in ts]),
        0.1,
    )
    goal("sidecar: killed -> out of the FIB, max <= 150 ms", (a, "killed"), worst, 0.15)
    goal("sidecar: frozen (under load) -> decided, max <= 300 ms", (a, "frozen"), worst_verdict, 0.3)
    goal(
        "sidecar: thawed -> back in the FIB, max <= 400 ms",
        (a, "frozen"),
        lambda ts: max((t.back or 9) for t in ts) if ts else None,
        0.4,
    )
    interval = ROUTER.interval
    goal(
        f"router: killed -> out of the FIB, median <= interval / 2 + 15 ms ({(interval / 2 + 0.015) * 1000:.0f} ms)",
        (ROUTER.label, "killed"),
        lambda ts: median([t.total for t in ts]),
        interval / 2 + 0.015,
    )  # fmt: skip
    lines += ["", *(f"![{name}](img/{name})" for name in images)]
    return lines


def main() -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trials", type=int, default=10)
        p.add_argument("--quick", action="store_true", help="3 trials each: a smoke run that writes nothing")

    args = arguments(__doc__, "bench/detection.py", options)
    if args is None:
        return 1
    if args.quick:
        args.trials, args.no_write = 3, True
    started = time.monotonic()
    r = Results()
    sidecar(r, args.trials)
    router(r, args.trials)
    images = draw(r) if not args.no_write else []
    publish("bench/detection.py", report(r, args.trials, images, time.monotonic() - started), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
