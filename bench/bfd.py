#!/usr/bin/env python3
"""A server that dies whole: how long its path stays in the router's FIB, with and without BFD.

Nothing on a dead host can withdraw anything: the router finds out by itself, from
the BGP hold timer (3 s here, frr/bgp/frr.conf) or from BFD (bfdd on both ends,
issue 26). Two ways a host dies, each timed from the fault to the moment its path
leaves the router's kernel FIB (polled every 2 ms):

* blackholed: every frame from the server dropped at the router's port (an nftables
  netdev ingress chain), with no change of carrier, as a power cut or a kernel panic;
* frozen: every process on the server SIGSTOPped, while its kernel still answers TCP.

Three settings of the servers' `bfd`, measured one after the other in the same lab:
none (the hold timer), `true` (300 ms x 3: the router's 100 ms profile is
slower-of-the-two, so 900 ms), and 100 ms x 3; and `exabgp healthcheck` at its
defaults and fastest (bench/compare.py's deployment of it, hold time 3 s), which has
nothing but the hold timer either: ExaBGP has no BFD. For each, one run of the
lab client at 1,000 queries/s over 3 servers counts the queries a dead host loses.
Last, bfdd's own cost on a server (CPU and memory over --cost-seconds).

    python bench/bfd.py [--trials N] [--quick] [--no-write]
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

from compare import ANYCASTD, HC_DEFAULTS, HC_FASTEST, Deployment
from report import arguments, context, cpu_percent, publish, rss_mb

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import SERVICE_V4, Server

SETTINGS: list[tuple[str, str | None]] = [
    ("no BFD (BGP hold timer, 3 s)", None),
    ("BFD `true` (300 ms x 3)", "true"),
    ("BFD 100 ms x 3", daemons.LAB_BFD),
]
#: `exabgp healthcheck` in the same lab, as bench/compare.py runs it beside anycastd.
HEALTHCHECKS = [HC_DEFAULTS, HC_FASTEST]
RATE, LOAD_SECONDS, FAULT_AT = 1000, 6, 1.0


def configure(lab: BgpLab, bfd: str | None) -> None:
    """Every server's anycastd restarted with this ``bfd``; wait for every path (and BFD, with it)."""
    for s in lab.servers:
        lab.kill_anycastd(s)
        lab.start_anycastd(s, daemons.anycastd_config(lab.lab, s, bfd=bfd))
    lab.wait_paths(len(lab.servers), timeout=60)
    if bfd is not None:
        lab.wait_bfd(timeout=30)
    time.sleep(2)  # BFD leaves its 1 s slow start for the negotiated intervals with a poll sequence


def faults(lab: BgpLab) -> list[tuple[str, Callable[[Server], None], Callable[[Server], None]]]:
    return [
        ("host blackholed", lab.blackhole, lambda s: lab.blackhole(s, on=False)),
        ("host frozen", lab.freeze_host, lab.thaw_host),
    ]


def recover(lab: BgpLab, bfd: str | None) -> None:
    lab.wait_paths(len(lab.servers), timeout=60)
    if bfd is not None:
        lab.wait_bfd(timeout=30)
        time.sleep(1.5)


def gone_after(lab: BgpLab, server: Server, fault: Callable[[Server], None]) -> float:
    started = time.monotonic()
    fault(server)
    lab.wait_server(server, present=False, timeout=15)
    return time.monotonic() - started


def lost(lab: BgpLab, server: Server, fault: Callable[[Server], None], undo: Callable[[Server], None]) -> int:
    load = lab.client(SERVICE_V4.split("/")[0], count=RATE * LOAD_SECONDS, rate=RATE)
    time.sleep(FAULT_AT)
    fault(server)
    result = lab.client_result(load)
    undo(server)
    return int(result["lost"])


def cpu_and_memory(pid: int, seconds: float) -> tuple[float, float]:
    """(% of a core, MB resident) of ``pid`` over ``seconds``."""
    return cpu_percent([pid], seconds)[pid], rss_mb(pid)


def main() -> int:
    def add(p: object) -> None:
        p.add_argument("--trials", type=int, default=10, help="trials per setting and fault (default 10)")  # type: ignore[attr-defined]
        p.add_argument("--quick", action="store_true", help="3 trials, a 10 s cost sample, write nothing")  # type: ignore[attr-defined]
        p.add_argument("--cost-seconds", type=float, default=60.0, help="bfdd's cost sample (default 60 s)")  # type: ignore[attr-defined]

    args = arguments(__doc__, "bench/bfd.py", add)
    if args is None:
        return 1
    trials = 3 if args.quick else args.trials
    cost_seconds = 10.0 if args.quick else args.cost_seconds
    rows: list[str] = []
    with BgpLab() as lab:

        def measure(name: str, bfd: str | None, fresh: Callable[[], None]) -> None:
            for fault_name, fault, undo in faults(lab):
                # The loss first, on a fresh lab: the trials fault each server again and again, and BFD's flap
                # damping (bfd.damping) would hold a server back that failed three times in a minute.
                fresh()
                loss = lost(lab, lab.servers[0], fault, undo)
                recover(lab, bfd)
                times = []
                for i in range(trials):
                    server = lab.servers[i % len(lab.servers)]
                    times.append(gone_after(lab, server, fault))
                    undo(server)
                    recover(lab, bfd)
                ms = sorted(1000 * t for t in times)
                row = (
                    f"| {name} | {fault_name} | {statistics.median(ms):.0f} ms | {ms[-1]:.0f} ms | {ms[0]:.0f} ms | "
                    f"{loss:,} of {RATE * LOAD_SECONDS:,} |"
                )
                print(row, flush=True)
                rows.append(row)

        deployment = Deployment(lab)
        for controller in HEALTHCHECKS:
            deployment.assign({s.name: controller for s in lab.servers})
            measure(f"`{controller.label}`", None, deployment.restore)
        deployment.assign({s.name: ANYCASTD for s in lab.servers})
        for name, bfd in SETTINGS:
            configure(lab, bfd)
            measure(name, bfd, functools.partial(configure, lab, bfd))
        costs = []
        for name, bfd in (("100 ms x 3", daemons.LAB_BFD), ("300 ms x 3 (`bfd: true`)", "true")):
            configure(lab, bfd)
            pid = lab.bfdd_pid(lab.servers[1])
            assert pid is not None
            cpu, rss = cpu_and_memory(pid, cost_seconds)
            costs.append(f"| {name} | {cpu:.2f} % | {rss:.1f} MB |")
            print(costs[-1], flush=True)
    lines = [
        "## A host that dies whole: BFD through bfdd (`bench/bfd.py`)",
        "",
        context(),
        f"`python bench/bfd.py --trials {trials}`: {trials} trials per row, rotating over the 3 servers; from the",
        "fault to the path leaving the router's kernel FIB (polled every 2 ms). The router's BFD profile is",
        "100 ms x 3 (frr/bgp/frr.conf); BGP hold time 3 s. Lost: the lab client at "
        f"{RATE:,} queries/s for {LOAD_SECONDS} s over",
        f"3 servers, s1 dying {FAULT_AT:g} s in and staying dead to the end of the run.",
        "",
        "| servers' `bfd` | fault | median | max | min | queries lost |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        "Without BFD the hold timer decides, for anycastd as for `exabgp healthcheck` at any of its settings",
        "(the first rows): a dead host sends no withdrawal, and ExaBGP has no BFD.",
        "",
        f"bfdd's own cost on a server (two sessions, IPv4 and IPv6), over {cost_seconds:g} s in the running lab:",
        "",
        "| BFD | CPU, of one core | resident memory |",
        "|---|---:|---:|",
        *costs,
    ]
    publish("bench/bfd.py", lines, write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
