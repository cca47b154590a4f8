#!/usr/bin/env python3
"""The dual-homed POP (containerlab/anycast-pop.clab.yml): what a dead host, a cut uplink and a dead ToR cost.

Times run from the fault to the change in the kernel FIB of the router that must react,
polled every 2 ms: both ToRs for a dead host, the ToR for a cut uplink, the edge for a dead
ToR. BFD is 100 ms x 3 everywhere (frr/pop/*.conf, containerlab/pop/s*/anycastd.yaml).

Lost queries: the lab client at 1,000 queries/s for 10 s over the whole POP, the fault 2 s
in and lasting to the end. A dead ToR or a cut uplink is measured twice: with the servers'
natural return route (ECMP via both ToRs, as the topology file sets it up) and with
anycastd's `return_path`, which keeps that route via the live sessions only.

    python bench/pop.py [--trials N] [--quick] [--no-write]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from report import arguments, context, publish

from anycastd_lab.pop import PopLab
from anycastd_lab.topology import SERVICE_V4, wait_until

RATE, LOAD_SECONDS, FAULT_AT = 1000, 10, 2.0


def restart_servers(pop: PopLab, return_path: bool) -> None:
    """Every anycastd started afresh with (or without) ``return_path``: the lab's own setting, which restore() keeps.
    Afresh: the trials before faulted every server again and again, and BFD's flap damping remembers."""
    pop.return_path = return_path
    for s in pop.servers:
        pop.kill_anycastd(s)
    pop.restore()
    for s in pop.servers:
        assert ("return_path:" in pop.anycastd_config(s)) is return_path


def timed(pop: PopLab, fault: Callable[[], None], done: Callable[[], bool]) -> float:
    started = time.monotonic()
    fault()
    wait_until(done, 15, interval=0.002, what="the FIB to follow the fault")
    return time.monotonic() - started


def lost(pop: PopLab, fault: Callable[[], None]) -> int:
    load = pop.client(SERVICE_V4.split("/")[0], count=RATE * LOAD_SECONDS, rate=RATE)
    time.sleep(FAULT_AT)
    fault()
    return int(pop.client_result(load, timeout=LOAD_SECONDS + 60)["lost"])


def main() -> int:
    def add(p: object) -> None:
        p.add_argument("--trials", type=int, default=5, help="trials per fault (default 5)")  # type: ignore[attr-defined]
        p.add_argument("--quick", action="store_true", help="2 trials, write nothing")  # type: ignore[attr-defined]

    args = arguments(__doc__, "bench/pop.py", add)
    if args is None:
        return 1
    trials = 2 if args.quick else args.trials
    rows: list[str] = []
    losses: list[str] = []
    with PopLab() as pop:
        pop.restore()
        s = pop.servers
        faults: list[tuple[str, str, Callable[[int], tuple[Callable[[], None], Callable[[], bool]]]]] = [
            (
                "host blackholed at both ToRs",
                "gone from both ToRs",
                lambda i: (lambda: pop.blackhole(s[i % 3]), lambda: s[i % 3].name not in pop.server_paths()),
            ),
            (
                "host frozen (every process)",
                "gone from both ToRs",
                lambda i: (lambda: pop.freeze_host(s[i % 3]), lambda: s[i % 3].name not in pop.server_paths()),
            ),
            (
                "one uplink cut, no carrier change",
                "gone from that ToR",
                lambda i: (
                    lambda: pop.cut_uplink(s[i % 3], "r1"),
                    lambda: s[i % 3].name not in pop.tor_server_paths("r1"),
                ),
            ),
            (
                "a ToR dies (power)",
                "gone from the edge",
                lambda i: (lambda: pop.kill_tor("r1"), lambda: pop.edge_paths() == {"r2"}),
            ),
        ]
        for name, what, make in faults:
            times = []
            for i in range(trials):
                fault, done = make(i)
                times.append(1000 * timed(pop, fault, done))
                pop.restore()
            ms = sorted(times)
            row = f"| {name} | {what} | {statistics.median(ms):.0f} ms | {ms[-1]:.0f} ms | {ms[0]:.0f} ms |"
            print(row, flush=True)
            rows.append(row)
        for return_path in (False, True):
            restart_servers(pop, return_path)
            setting = "anycastd's `return_path`" if return_path else "ECMP via both ToRs (natural)"
            for name, fault in (
                ("a ToR dies", lambda: pop.kill_tor("r1")),
                ("s3's uplink to r1 cut", lambda: pop.cut_uplink(s[2], "r1")),
            ):
                count = lost(pop, fault)
                pop.restore()
                line = f"| {name} | {setting} | {count:,} of {RATE * LOAD_SECONDS:,} |"
                print(line, flush=True)
                losses.append(line)
    lines = [
        "## The dual-homed POP (`bench/pop.py`)",
        "",
        context(),
        f"`python bench/pop.py --trials {trials}`: edge e1, ToRs r1 and r2, three servers each linked to both",
        "(containerlab/anycast-pop.clab.yml); BFD 100 ms x 3 on every session; each time from the fault to the",
        f"FIB change that answers it, polled every 2 ms, {trials} trials (rotating over the servers).",
        "",
        "| fault | FIB | median | max | min |",
        "|---|---|---:|---:|---:|",
        *rows,
        "",
        f"Queries lost: the lab client at {RATE:,} queries/s for {LOAD_SECONDS} s, the fault {FAULT_AT:g} s in and",
        "lasting to the end; the servers' route towards the clients as the topology sets it up, then kept by anycastd:",
        "",
        "| fault | servers' route to the clients | queries lost |",
        "|---|---|---:|",
        *losses,
    ]
    publish("bench/pop.py", lines, write=not args.no_write and not args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
