#!/usr/bin/env python3
"""Between all and nothing: weighted ECMP and soft drains on the sidecar lab, each beside what it replaces.

Weights: every server's share of N queries (each its own flow) with no weight (plain ECMP), then with
weights 1:2:3 (`weight` on each sidecar's service, the link-bandwidth community), with the router's kernel
nexthop weights. Drains under load (RATE queries a second): one server drained plainly and softly, and
every server drained at once, plainly and softly; the queries lost, and the fewest paths the router's FIB
held meanwhile.

    python bench/weights.py [--queries 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from report import arguments, context, publish

from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, wait_until

ADDRESS = SERVICE_V4.split("/")[0]
RATE = 300  # queries a second during the drains
WEIGHTS = (1, 2, 3)
DRAIN_WAIT = 8.0


def shares(lab: BgpLab, queries: int, rounds: int) -> tuple[dict[str, list[float]], int]:
    """Each server's share of ``queries`` in each round, and the queries lost over all rounds."""
    out: dict[str, list[float]] = {s.name: [] for s in lab.servers}
    lost = 0
    for _ in range(rounds):
        result = lab.queries(ADDRESS, queries)
        lost += int(result["lost"])
        for s in lab.servers:
            out[s.name].append(result["answered"].get(s.name, 0) / queries)
    return out, lost


def drain(lab: BgpLab, servers: list[str], soft: bool) -> tuple[int, int, int]:
    """Drain ``servers`` at once under load: (queries lost, queries sent, fewest paths in the FIB meanwhile)."""
    seconds = DRAIN_WAIT + 4
    load = lab.client(ADDRESS, count=int(RATE * seconds), rate=RATE)
    time.sleep(1.0)
    flags = ["--soft"] if soft else []

    def one(name: str) -> None:
        server = next(s for s in lab.servers if s.name == name)
        lab.anycastctl(server, "withdraw", "dns", *flags, "--reason", "bench", "--wait", "--timeout", f"{DRAIN_WAIT:g}")

    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        threads = [threading.Thread(target=one, args=(n,)) for n in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    result = lab.client_result(load)
    fewest = min(len(hops) for hops in watch.seen())
    lab.restore()  # announce --all, every path back
    return int(result["lost"]), int(result["sent"]), fewest


def main() -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--queries", type=int, default=30_000, help="queries per round, each its own flow")
        p.add_argument("--rounds", type=int, default=3)

    args = arguments(__doc__, "bench/weights.py", options)
    if args is None:
        return 1
    command = f"python bench/weights.py --queries {args.queries} --rounds {args.rounds}"
    with BgpLab() as lab:
        plain, plain_lost = shares(lab, args.queries, args.rounds)
        lab.weigh(WEIGHTS)
        wait_until(lambda: len(set(lab.kernel_shares(SERVICE_V4).values())) == 3, 15, what="weighted nexthops")
        kernel = lab.fib.weights(SERVICE_V4) if lab.fib else {}
        weighted, weighted_lost = shares(lab, args.queries, args.rounds)
        lab.weigh([None] * len(lab.servers))
        wait_until(lambda: len(set(lab.kernel_shares(SERVICE_V4).values())) == 1, 15, what="equal nexthops")
        names = [s.name for s in lab.servers]
        drains = {
            "one server, plain withdraw": drain(lab, names[:1], soft=False),
            "one server, withdraw --soft": drain(lab, names[:1], soft=True),
            "every server at once, plain withdraw": drain(lab, names, soft=False),
            "every server at once, withdraw --soft": drain(lab, names, soft=True),
        }
        hop_of = {s.v4: s.name for s in lab.servers}
    total = sum(WEIGHTS)
    lines = [
        "## Weighted ECMP and soft drains",
        "",
        f"{context()} `{command}`, as root. The sidecar lab (FRR 8.4 with frr/bgp/frr.conf, three BIND/Unbound "
        f"servers); {args.queries:,} queries a round from the lab client, each its own flow; median share over "
        f"{args.rounds} rounds (min-max in brackets).",
        "",
        "| server | weight | kernel nexthop weight | share, no weights | share, weights 1:2:3 | the weight's share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    kernel_by_name = {hop_of.get(hop, hop): w for hop, w in kernel.items()}
    for s, w in zip(lab.servers, WEIGHTS, strict=True):
        p, q = plain[s.name], weighted[s.name]
        lines.append(
            f"| {s.name} | {w} | {kernel_by_name.get(s.name, '-')} | {100 * statistics.median(p):.1f} % "
            f"({100 * min(p):.1f}-{100 * max(p):.1f}) | {100 * statistics.median(q):.1f} % "
            f"({100 * min(q):.1f}-{100 * max(q):.1f}) | {100 * w / total:.1f} % |"
        )
    lines += [
        "",
        f"Queries lost: {plain_lost} without weights, {weighted_lost} with them.",
        "",
        f"Drains under load ({RATE} queries a second for {DRAIN_WAIT + 4:g} s; every drain with `--wait --timeout "
        f"{DRAIN_WAIT:g}`, the lab restored between rows):",
        "",
        "| drain | queries lost | of | fewest paths in the router's FIB meanwhile |",
        "|---|---:|---:|---:|",
    ]
    for label, (lost, sent, fewest) in drains.items():
        lines.append(f"| {label} | {lost} | {sent} | {fewest} |")
    publish("bench/weights.py", lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
