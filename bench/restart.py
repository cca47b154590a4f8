#!/usr/bin/env python3
"""`systemctl restart anycastd` under load: queries lost while one server's anycastd is restarted.

systemd restarts the unit (KillMode=mixed) by sending SIGTERM to anycastd, waiting for it to exit, then
starting it again; that is what each trial does to one server (rotating), with the lab client sending
--rate queries/s (every query from a fresh source port, so a new ECMP flow) for the whole trial. On
SIGTERM anycastd withdraws the service, waits until no query arrives (drain.quiet, at most
drain.grace) and exits, leaving its resolver running; the new anycastd announces again once its
probes have passed `rise` times. A package upgrade restarts it the same way (docs/packaging.md).
Prints a table and writes it into docs/benchmarks.md.

    python bench/restart.py [--trials N] [--rate Q]
"""

from __future__ import annotations

import signal
import statistics
import sys
import time

from report import arguments, context, publish

from anycastd.config.sidecar import DrainSettings
from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab

LOAD_SECONDS = 14
RESTART_AT = 1.5


def trial(lab: BgpLab, n: int, rate: int) -> dict[str, object]:
    victim = lab.servers[n % len(lab.servers)]
    load = lab.client("203.0.113.53", count=rate * LOAD_SECONDS, rate=rate)
    time.sleep(RESTART_AT)
    started = time.monotonic()
    lab.lab.stop(daemons.anycastd_key(victim), signal.SIGTERM)  # returns once anycastd has exited
    stopped = time.monotonic() - started
    withdrawn = victim.name not in lab.server_paths()
    lab.start_anycastd(victim)
    lab.wait_server(victim, present=True, timeout=LOAD_SECONDS)
    back = time.monotonic() - started
    result = lab.client_result(load)
    lab.restore()
    return {
        "server": victim.name,
        "sent": rate * LOAD_SECONDS,
        "lost": result["lost"],
        "victim_answered": result["answered"].get(victim.name, 0),
        "stopped": stopped,
        "withdrawn": withdrawn,
        "back": back,
    }


def main() -> int:
    def add(p: object) -> None:
        p.add_argument("--trials", type=int, default=10)  # type: ignore[attr-defined]
        p.add_argument("--rate", type=int, default=1000)  # type: ignore[attr-defined]

    args = arguments(__doc__, "bench/restart.py", add)
    if args is None:
        return 1
    rows = []
    with BgpLab() as lab:
        for n in range(args.trials):
            row = trial(lab, n, args.rate)
            rows.append(row)
            print(
                f"  trial {n + 1}/{args.trials} on {row['server']}: lost {row['lost']} of {row['sent']}, "
                f"stopped in {row['stopped']:.2f} s, path back {row['back']:.2f} s after SIGTERM",
                flush=True,
            )
    lost = [int(r["lost"]) for r in rows]  # type: ignore[call-overload]
    back = [float(r["back"]) for r in rows]  # type: ignore[arg-type]
    stopped = [float(r["stopped"]) for r in rows]  # type: ignore[arg-type]
    table = [
        "| trial | restarted server | queries sent | answered by it | lost | withdrawn when it exited | "
        "SIGTERM to exit | SIGTERM to path back |",
        "|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for n, r in enumerate(rows, 1):
        table.append(
            f"| {n} | {r['server']} | {r['sent']} | {r['victim_answered']} | {r['lost']} | "
            f"{'yes' if r['withdrawn'] else 'NO'} | {r['stopped']:.2f} s | {r['back']:.2f} s |"
        )
    zero = sum(1 for x in lost if x == 0)
    verdict = "met" if zero == len(lost) else "**missed**"
    publish(
        "bench/restart.py",
        [
            "## `systemctl restart anycastd` under load",
            "",
            f"Command: `python bench/restart.py --trials {args.trials} --rate {args.rate}` "
            "(as root; `make bench-sidecar` runs it).",
            context(),
            f"Load: {args.rate} queries/s from the client namespace for {LOAD_SECONDS} s, one source port per query.",
            f"{RESTART_AT} s in, one server's anycastd is restarted as systemd restarts the unit: SIGTERM, wait",
            "for it to exit, start it again. Its resolver runs throughout. anycastd withdraws on SIGTERM and exits",
            f"once no query has arrived for drain.quiet ({DrainSettings().quiet:g} s), after drain.grace "
            f"({DrainSettings().grace:g} s) at most",
            "(the defaults); the new one announces after `rise` passing probes.",
            "",
            f"Goal: 0 queries lost in 10 of 10 trials: **{verdict}** ({zero} of {len(lost)} with 0 lost; "
            f"lost per trial: {', '.join(map(str, lost))}).",
            f"SIGTERM to exit: median {statistics.median(stopped):.2f} s; SIGTERM to the path back in the router's",
            f"FIB: median {statistics.median(back):.2f} s, max {max(back):.2f} s.",
            "",
            *table,
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
