#!/usr/bin/env python3
"""Planned drains under load: queries lost, and how long `anycastctl withdraw --wait` took.

Each trial runs the lab client at --rate queries/s (every query from a fresh
source port, so a new ECMP flow), drains one server (rotating) with
`anycastctl withdraw dns --wait`, kills its resolver the moment the command
returns, lets the load finish, and counts unanswered queries. Then it puts
the server back. Prints a table and writes it into docs/benchmarks.md.

    python bench/drain.py [--trials N] [--rate Q]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from report import arguments, context, publish

from anycastd.config.sidecar import DrainSettings
from anycastd_lab.bgp import BgpLab

LOAD_SECONDS = 6
DRAIN_AFTER = 1.5


def trial(lab: BgpLab, n: int, rate: int, wait: bool = True) -> dict[str, object]:
    victim = lab.servers[n % len(lab.servers)]
    load = lab.client("203.0.113.53", count=rate * LOAD_SECONDS, rate=rate)
    time.sleep(DRAIN_AFTER)
    argv = ["withdraw", "dns", "--reason", f"bench trial {n + 1}", "--json"] + (["--wait"] if wait else [])
    drain = lab.anycastctl(victim, *argv)
    if drain.returncode != 0:
        raise RuntimeError(f"withdraw failed ({drain.returncode}): {drain.stderr}")
    report = json.loads(drain.stdout).get("drain") or {"waited": 0.0, "packets": None, "method": "-"}
    lab.kill_resolver(victim)
    result = lab.client_result(load)
    lab.restore()
    return {
        "server": victim.name,
        "lost": result["lost"],
        "sent": rate * LOAD_SECONDS,
        "victim_answered": result["answered"].get(victim.name, 0),
        "waited": report["waited"],
        "packets": report["packets"],
        "method": report["method"],
    }


def main() -> int:
    def add(p: object) -> None:
        p.add_argument("--trials", type=int, default=10)  # type: ignore[attr-defined]
        p.add_argument("--rate", type=int, default=1000)  # type: ignore[attr-defined]
        p.add_argument("--baseline", type=int, default=5, help="trials without --wait, for contrast")  # type: ignore[attr-defined]

    args = arguments(__doc__, "bench/drain.py", add)
    if args is None:
        return 1
    rows = []
    with BgpLab() as lab:
        for n in range(args.trials):
            row = trial(lab, n, args.rate)
            rows.append(row)
            print(
                f"  trial {n + 1}/{args.trials} on {row['server']}: lost {row['lost']} of {row['sent']}, "
                f"drain took {row['waited']} s ({row['packets']} packets after the withdrawal)",
                flush=True,
            )
        baseline = [trial(lab, n, args.rate, wait=False) for n in range(args.baseline)]
        for r in baseline:
            print(f"  without --wait on {r['server']}: lost {r['lost']}", flush=True)
    waited = [float(r["waited"]) for r in rows]  # type: ignore[arg-type]
    lost = [int(r["lost"]) for r in rows]  # type: ignore[call-overload]
    quiet = DrainSettings().quiet
    table = [
        "| trial | drained server | queries sent | answered by it before the drain | lost | `--wait` took | "
        "packets after the withdrawal | measured by |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for n, r in enumerate(rows, 1):
        table.append(
            f"| {n} | {r['server']} | {r['sent']} | {r['victim_answered']} | {r['lost']} | {r['waited']:.2f} s | "
            f"{r['packets']} | {r['method']} |"
        )
    verdict = "met" if max(lost) == 0 else "**missed**"
    publish(
        "bench/drain.py",
        [
            "## Planned drain: `anycastctl withdraw --wait`, then the resolver is killed",
            "",
            f"Command: `python bench/drain.py --trials {args.trials} --rate {args.rate}` "
            "(as root; `make bench-sidecar` runs it).",
            context(),
            f"Load: {args.rate} queries/s from the client namespace for {LOAD_SECONDS} s, one source port per query;",
            f"the drain starts {DRAIN_AFTER} s in and the resolver is SIGKILLed as soon as `--wait` returns.",
            f"drain.quiet is {quiet:g} s (the default), so `--wait` can never take less than that.",
            "",
            f"Goal: 0 queries lost in every trial: **{verdict}** (lost per trial: {', '.join(map(str, lost))}).",
            f"`--wait` took median {statistics.median(waited):.2f} s, max {max(waited):.2f} s.",
            "",
            *table,
            "",
            "For contrast, the same drain without `--wait` (the resolver killed as soon as `withdraw` returns),",
            f"{args.baseline} trials: lost {', '.join(str(r['lost']) for r in baseline)} queries: what the measured",
            "wait saves.",
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
