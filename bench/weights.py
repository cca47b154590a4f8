#!/usr/bin/env python3
"""Between all and nothing: weighted ECMP and soft drains on the sidecar lab, each beside what it replaces.

Degradation: one resolver slowed, its share over time; one crossing its threshold every 2 s, the weight
changes. Weights: every server's share of N queries (each its own flow) with no weight (plain ECMP), then with
weights 1:2:3 (`weight` on each sidecar's service, the link-bandwidth community), with the router's kernel
nexthop weights. Drains under load (RATE queries a second): one server drained plainly and softly, and
every server drained at once, plainly and softly; the queries lost, and the fewest paths the router's FIB
held meanwhile.

    python bench/weights.py [--queries 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Any

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


DEGRADED_RULE = "{latency_ms: 5, recover_ms: 2, window: 5}"
BIN = 0.5  # seconds per row of the share-over-time table


def slowed_share(lab: BgpLab, slow_for: float) -> dict[str, Any]:
    """s1 slowed for ``slow_for`` s under load (weights 10 each, degraded_weight 1): when its kernel weight fell
    and came back, the queries lost, and s1's share of the answers in each BIN-second bin."""
    s1 = lab.servers[0]
    lab.weigh([None] * 3)
    lab.weigh([10] * 3, (1, DEGRADED_RULE))
    wait_until(lambda: abs(lab.kernel_shares(SERVICE_V4).get("s1", 0) - 1 / 3) < 0.02, 15, what="equal weights")
    lead = 2.0
    seconds = lead + slow_for + 4.0
    load = lab.client(ADDRESS, count=int(RATE * seconds), rate=RATE, timeline=True)
    time.sleep(lead)
    began = time.monotonic()
    with lab.slowed(s1):
        wait_until(lambda: lab.kernel_shares(SERVICE_V4).get("s1", 1) < 0.1, 15, what="s1 degraded")
        down = time.monotonic() - began
        time.sleep(max(0.0, slow_for - down))
    ended = time.monotonic()
    wait_until(lambda: lab.kernel_shares(SERVICE_V4).get("s1", 0) > 0.3, 15, what="s1 back")
    back = time.monotonic() - ended
    result = lab.client_result(load)
    start = float(result["start"])
    bins: dict[int, list[int]] = {}
    for at, who in result["timeline"]:
        row = bins.setdefault(int(at // BIN), [0, 0, 0])  # s1, answered, lost
        row[0] += who == "s1"
        row[1] += who is not None
        row[2] += who is None
    lab.weigh([None] * 3)
    return {
        "down": down, "back": back, "lost": int(result["lost"]), "sent": int(result["sent"]), "bins": bins,
        "slow": (began - start, ended - start),
    }  # fmt: skip


def oscillation(lab: BgpLab, seconds: float) -> tuple[int, int, str]:
    """s2 slowed 2 s, fast 2 s, ... for ``seconds``: its kernel weight's changes, the changes anycastd counts,
    and its level at the end."""
    s2 = lab.servers[1]
    lab.weigh([None] * 3)
    lab.weigh([10] * 3, (1, DEGRADED_RULE))
    wait_until(lambda: abs(lab.kernel_shares(SERVICE_V4).get("s2", 0) - 1 / 3) < 0.02, 15, what="equal weights")
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            share = round(lab.kernel_shares(SERVICE_V4).get("s2", 0.0), 2)
            if not seen or share != seen[-1]:
                seen.append(share)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        with lab.slowed(s2):
            time.sleep(2.0)
        time.sleep(2.0)
    done.set()
    watcher.join()
    weight = json.loads(lab.anycastctl(s2, "--json", "status").stdout)["services"][0]["weight"]
    lab.weigh([None] * 3)
    return len(seen) - 1, int(weight["changes"]), str(weight["level"])


def main() -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--queries", type=int, default=30_000, help="queries per round, each its own flow")
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--slow", type=float, default=6.0, help="seconds one resolver is slowed")
        p.add_argument("--oscillate", type=float, default=60.0, help="seconds of crossing the threshold every 2 s")

    args = arguments(__doc__, "bench/weights.py", options)
    if args is None:
        return 1
    command = (
        f"python bench/weights.py --queries {args.queries} --rounds {args.rounds} --slow {args.slow:g} "
        f"--oscillate {args.oscillate:g}"
    )
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
        slowed = slowed_share(lab, args.slow)
        kernel_changes, counted, level = oscillation(lab, args.oscillate)
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
    lines += [
        "",
        "A slowed resolver (`degraded_when: " + DEGRADED_RULE + "`, weights 10 each, `degraded_weight: 1`): s1's "
        f"resolver stopped 40 ms of every 50 (SIGSTOP/SIGCONT: it answers every query, late) for {args.slow:g} s, "
        f"under {RATE} queries a second. Its kernel weight fell {slowed['down']:.2f} s after the slowdown began "
        f"and came back {slowed['back']:.2f} s after it ended; {slowed['lost']} of {slowed['sent']} queries lost, "
        "and its path never left the FIB. s1's share of the answers, per half second:",
        "",
        "| t (s) | s1's share | answered | lost | |",
        "|---:|---:|---:|---:|---|",
    ]
    lo, hi = slowed["slow"]
    for b in sorted(slowed["bins"]):
        s1, answered, lost = slowed["bins"][b]
        part = s1 / answered if answered else 0.0
        mark = " (slowed)" if lo <= b * BIN < hi else ""
        lines.append(f"| {b * BIN:.1f} | {100 * part:.0f} % | {answered} | {lost} | {'#' * round(40 * part)}{mark} |")
    lines += [
        "",
        f"Crossing the threshold every 2 s (s2 slowed 2 s, fast 2 s, for {args.oscillate:g} s): its kernel weight "
        f"changed {kernel_changes} times; anycastd counted {counted} weight changes and ended `{level}` "
        "(flap damping holds it degraded while it keeps crossing). The goal: at most 8 a minute.",
    ]
    publish("bench/weights.py", lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
