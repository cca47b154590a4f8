#!/usr/bin/env python3
"""Fleet safety beside `exabgp healthcheck`: every server failing the same way at once, one recovering,
and a flapping resolver.

The sidecar lab (FRR with frr/bgp/frr.conf, three servers) runs one controller on every server at a time:
anycastd with `failure_action: graceful-shutdown` (the recommended configuration), anycastd with
`withdraw` (the default, for routers that ignore the community), and `exabgp healthcheck` with its
fastest and its default options (as bench/compare.py runs it). Then the router-side variant
(`anycastd router`, static routes) gets the same all-fail and flap.

A server "fails" the way a bad zone pushed everywhere does: its resolver reloads (SIGHUP, no restart) a
health record that no longer matches, and goes on answering everything else. Queries come from the
lab's client, each its own flow; paths are read off the router's kernel FIB.

    python bench/fleet.py [--flap 60] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from compare import HC_DEFAULTS, HC_FASTEST, Controller, Deployment
from report import arguments, context, publish

from anycastd_lab.base import DnsLab
from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import SERVICE_V4

RATE = 200  # queries per second from the client while every server fails
BURST = 300  # queries in the burst sent once every controller has reacted
ADDRESS = SERVICE_V4.split("/")[0]

GSHUT = Controller("anycastd, failure_action: graceful-shutdown", None, 0.2)
WITHDRAW = Controller("anycastd, failure_action: withdraw", None, 0.2)
CONTROLLERS = [GSHUT, WITHDRAW, HC_FASTEST, HC_DEFAULTS]
ACTION = {GSHUT: "graceful-shutdown", WITHDRAW: "withdraw"}


def settle(c: Controller) -> float:
    """Long enough for ``c`` to see a failure: one interval to the next check, three fast ones, and 2 s."""
    return c.interval + 3 * min(c.interval, 1.0) + 2.0


class Fleet(Deployment):
    """compare.Deployment with anycastd's failure action chosen per controller."""

    def failure_action(self, c: Controller) -> str:
        return ACTION[c]


@dataclass
class AllFail:
    one_gone: float | None  # seconds from one server failing alone until its path left the FIB
    paths_left: int  # in the FIB once every controller has reacted
    lost: int  # of the load that ran through the failure
    sent: int
    answered_after: int  # of BURST once every controller has reacted
    recovered_alone: float | None  # seconds until the one recovered server alone is in the FIB


@dataclass
class Results:
    flap_window: float
    all_fail: dict[str, AllFail] = field(default_factory=dict)
    flaps: dict[str, int] = field(default_factory=dict)


def until(lab: DnsLab, want: frozenset[str], limit: float) -> float | None:
    """Seconds until the FIB holds exactly the servers ``want``; None after ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if lab.server_paths() == want:
            return time.monotonic() - started
        time.sleep(0.002)
    return None


def all_fail(lab: DnsLab, wait: float, restore: Callable[[], None]) -> AllFail:
    """One server fails alone (restored after); then every server fails at once under a steady load; then s2
    recovers."""
    s1 = lab.servers[0]
    lab.set_health_record(s1, "sick")
    one = until(lab, frozenset(s.name for s in lab.servers[1:]), 2 * wait)
    restore()
    seconds = 1.0 + wait + 1.0
    load = lab.client(ADDRESS, int(RATE * seconds), RATE)
    time.sleep(1.0)
    for s in lab.servers:
        lab.set_health_record(s, "sick")
    time.sleep(wait)
    result = lab.client_result(load, timeout=seconds + 60)
    paths = len(lab.server_paths())
    after = lab.queries(ADDRESS, BURST, rate=RATE)
    s2 = lab.servers[1]
    lab.set_health_record(s2, "healthy")
    alone = until(lab, frozenset({s2.name}), 2 * wait)
    answered = sum(after["answered"].values())
    return AllFail(one, paths, int(result["lost"]), int(RATE * seconds), answered, alone)


def flap(lab: DnsLab, seconds: float) -> int:
    """s3's health record goes bad and good again every second for ``seconds``: its route changes."""
    s3 = lab.servers[2]
    with FibWatch(lab.lab.router, SERVICE_V4, period=0.01) as watch:
        start = time.monotonic()
        for tick in itertools.count():
            if time.monotonic() - start >= seconds:
                break
            lab.set_health_record(s3, "sick" if tick % 2 == 0 else "healthy")
            time.sleep(max(0.0, start + tick + 1 - time.monotonic()))
    lab.set_health_record(s3, "healthy")
    seen = [s3.v4 in hops for hops in watch.seen()]
    return sum(1 for was, now in itertools.pairwise(seen) if was != now)


def collect(r: Results) -> None:
    with BgpLab() as lab:
        dep = Fleet(lab)
        for c in CONTROLLERS:
            print(f"== {c.label}", flush=True)
            dep.assign({s.name: c for s in lab.servers})
            r.all_fail[c.label] = all_fail(lab, settle(c), dep.restore)
            print(f"   all fail: {r.all_fail[c.label]}", flush=True)
            dep.restore()
            r.flaps[c.label] = flap(lab, r.flap_window)
            print(f"   flapping for {r.flap_window:g} s: {r.flaps[c.label]} route changes", flush=True)
            dep.restore()
    with StaticLab() as static:
        label = "anycastd router, when_all_down: keep"
        print(f"== {label}", flush=True)
        r.all_fail[label] = all_fail(static, settle(GSHUT), static.restore)
        static.restore()
        r.flaps[label] = flap(static, r.flap_window)
        static.restore()


def report(r: Results, command: str, elapsed: float) -> list[str]:
    lines = [
        "## Fleet safety: every server failing at once, one recovering, a flapping resolver",
        "",
        f"Command: `{command}` (as root); the run took {elapsed / 60:.1f} min. {context()}",
        "Every server runs the same controller. A server fails the way a bad zone pushed everywhere does: its "
        "resolver reloads a health record that no longer matches and answers everything else as before. "
        "**One fails**: s1 alone fails; the time until its path leaves the FIB. "
        f"**All fail**: at {RATE} queries/s, every server fails at once; after each controller has had time to "
        f"react (one check interval, three fast ones and 2 s), {BURST} more queries are sent; then s2 recovers. "
        f"**Flap**: s3's health record goes bad and good again every second for {r.flap_window:g} s; route "
        "changes are s3's path entering or leaving the router's FIB (polled every 10 ms). Goals: every path "
        "kept and no query lost when all fail; one recovered server alone carries the service; at most 8 route "
        "changes a minute for a resolver flapping every second. One run of each: the one-fails time includes the "
        "resolver's reload and `fall` (3) failed probes, so it moves by up to a probe interval (200 ms for anycastd) "
        "from run to run; GRACEFUL_SHUTDOWN leaves the FIB within that of a withdrawal.",
        "",
        "| controller | one fails: out of the FIB after | all fail: paths left | lost during the failure | "
        "answered after it | recovered server alone in the FIB after | route changes, flapping |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, a in r.all_fail.items():
        alone = f"{a.recovered_alone * 1000:.0f} ms" if a.recovered_alone is not None else "never"
        one = f"{a.one_gone * 1000:.0f} ms" if a.one_gone is not None else "never"
        lines.append(
            f"| {label} | {one} | {a.paths_left} of 3 | {a.lost} of {a.sent} | {a.answered_after} of {BURST} | "
            f"{alone} | {r.flaps[label]} in {r.flap_window:g} s |"
        )
    return [*lines, ""]


def main() -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--flap", type=float, default=60.0, help="seconds of flapping per controller")
        p.add_argument("--quick", action="store_true", help="10 s of flapping: a smoke run that writes nothing")

    args = arguments(__doc__, "bench/fleet.py", options)
    if args is None:
        return 1
    r = Results(flap_window=10.0 if args.quick else args.flap)
    command = "python bench/fleet.py --quick" if args.quick else f"python bench/fleet.py --flap {args.flap:g}"
    started = time.monotonic()
    collect(r)
    publish("bench/fleet.py", report(r, command, time.monotonic() - started), write=not (args.no_write or args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
