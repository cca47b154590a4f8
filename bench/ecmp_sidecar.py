#!/usr/bin/env python3
"""64-way ECMP, the sidecar variant: start, a killed resolver, a drain, the spread of flows, CPU and memory.

anycastd_lab.wide's WideBgpLab: N Unbound servers (64 by default), each running anycastd at its
defaults (a probe every 0.2 s, failure_action graceful-shutdown) with its ExaBGP, one eBGP session per
family with FRR's bgpd, which keeps one path per server (maximum-paths N) under the import policy
`anycastd frr-policy` generates from the N servers' files. No BFD (anycastd_lab.wide says why).

* start: from the first anycastd's start (every resolver already answering; all N started at once)
  until the router's kernel FIB holds all N paths, both families;
* killed: a server's resolver SIGKILLed at a random phase, until its path leaves the FIB (polled
  every 2 ms), split at anycastd's verdict (its log); then restarted, until it is back;
* under load: LOAD_RATE queries/s from the client while a resolver is killed, and while a server is
  drained (`anycastctl withdraw dns --wait` on it): queries lost;
* spread: FLOWS distinct UDP flows to the service address, counted per server interface on the router,
  as bench/ecmp.py counts them;
* one sidecar started again while the other N - 1 run (anycastd stopped with SIGTERM, its path gone):
  from its start until its path is back, and the CPU its tree (anycastd, ExaBGP, the helper) used
  meanwhile. The lab's own start is N of those at once on this machine's cores; on N machines, each
  starts as one does here;
* CPU at rest of every process of the lab, summed by kind (anycastd, ExaBGP, its helper, Unbound, FRR's
  daemons), and their resident memory.

    python bench/ecmp_sidecar.py [--servers 64] [--trials 10] [--flows 100000] [--cpu-seconds 20]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import re
import signal
import statistics
import sys
import time
from pathlib import Path

from ecmp import COLLATERAL_WINDOW, LOAD_RATE, LOAD_SECONDS, PHASE, kills, ms, spread_rows, under_load
from report import arguments, context, cpu_percent, cpu_seconds, publish, rss_mb

from anycastd_lab import daemons
from anycastd_lab.topology import Server
from anycastd_lab.wide import MOST, WideBgpLab, spread
from anycastd_lab.wide import kind as process_kind

#: anycastd's verdict on its resolver, in its own log: the service going down
VERDICT = re.compile(r"^(\S+ \S+) \w+ \S+: dns: \w+ -> down ", re.MULTILINE)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--servers", type=int, default=MOST, help=f"servers (default and most {MOST})")
    p.add_argument("--trials", type=int, default=10, help="resolvers killed, one at a time (default 10)")
    p.add_argument("--flows", type=int, default=100_000, help="distinct flows for the spread (default 100,000)")
    p.add_argument("--cpu-seconds", type=float, default=20.0, help="the CPU sample (default 20 s)")
    p.add_argument("--load-trials", type=int, default=3, help="kills and drains under client load (default 3)")


def at_rest(lab: WideBgpLab, seconds: float) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """CPU (% of a core over ``seconds``) and RSS (MB) of the lab's processes, each summed by kind, and how
    many processes of each kind there are."""
    kinds = lab.processes()
    used = cpu_percent([pid for pids in kinds.values() for pid in pids], seconds)
    cpu = {kind: sum(used[pid] for pid in pids) for kind, pids in kinds.items()}
    memory = {kind: sum(rss_mb(pid) for pid in pids) for kind, pids in kinds.items()}
    return cpu, memory, {kind: len(pids) for kind, pids in kinds.items()}


#: The processes of one sidecar's tree, as WideBgpLab.processes names them
TREE = ("anycastd", "ExaBGP", "ExaBGP's helper")


def restart(lab: WideBgpLab, victim: Server) -> tuple[float, float]:
    """``victim``'s anycastd stopped (SIGTERM) and, once its path is gone, started again: seconds until the
    path was back, and the CPU seconds its tree had used by then."""
    lab.lab.stop(daemons.anycastd_key(victim), signal.SIGTERM)
    lab.wait_server(victim, present=False, timeout=10)
    started = time.monotonic()
    lab.start_anycastd(victim, lab.anycastd_config(victim))
    lab.wait_server(victim, present=True, timeout=60)
    back = time.monotonic() - started
    tree = [pid for pid, argv in lab.lab.commands(victim.name).items() if process_kind(argv) in TREE]
    return back, sum(cpu_seconds(pid) for pid in tree)


def main() -> int:
    args = arguments(__doc__, "bench/ecmp_sidecar.py", _options)
    if args is None:
        return 1
    n = args.servers
    built = time.monotonic()
    with WideBgpLab(n) as lab:
        built = time.monotonic() - built
        print(f"all {n} paths {lab.ready_in * 1000:.0f} ms after the first anycastd started", flush=True)
        time.sleep(5)  # past start-up
        cpu, memory, count = at_rest(lab, args.cpu_seconds)

        def verdicts(victim: Server) -> tuple[Path, re.Pattern[str]]:
            return daemons.anycastd_paths(lab.lab, victim)[1], VERDICT

        # each kill takes the next server of one shuffled round: flap damping holds out a server killed thrice
        victims = itertools.cycle(random.sample(lab.servers, n))
        killed_idle = kills(lab, args.trials, victims, verdicts)
        counts = spread(lab, args.flows)

        def kill(victim: Server) -> None:
            lab.kill_resolver(victim)
            lab.wait_server(victim, present=False, timeout=5)

        def drain(victim: Server) -> None:
            reply = lab.anycastctl(victim, "withdraw", "dns", "--reason", "bench", "--wait")
            if reply.returncode != 0:
                raise RuntimeError(f"anycastctl withdraw on {victim.name}: {reply.stderr.strip()}")

        def announce(victim: Server) -> None:
            lab.anycastctl(victim, "announce", "dns")

        restart_resolver = lambda v: lab.start_resolver(v, wait=False)  # noqa: E731
        killed = [under_load(lab, next(victims), kill, restart_resolver) for _ in range(args.load_trials)]
        drained = [under_load(lab, next(victims), drain, announce) for _ in range(args.load_trials)]
        restarted = [restart(lab, next(victims)) for _ in range(args.load_trials)]
    tree = sum(cpu.get(kind, 0.0) for kind in TREE)
    order = sorted(cpu, key=lambda kind: (kind not in TREE, kind))
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| servers (paths per family) | {n} |",
        f"| start -> all {n} paths in the FIB, both families, ms | {lab.ready_in * 1000:,.0f} |",
        killed_idle.row(
            f"a resolver killed, no client traffic (a probe every {PHASE:g} s)",
            "anycastd's",
            "ExaBGP, BGP, FRR and the kernel",
        ),
        f"| restarted -> back, median / max ms | {ms(killed_idle.back)} |",
        f"| one sidecar started again, the other {n - 1} running: start -> its path in the FIB, median / max ms "
        f"(n = {len(restarted)}) | {ms([t for t, _ in restarted])} |",
        "| the CPU its tree (anycastd, ExaBGP, the helper) used until then, median / max s | "
        + " / ".join(f"{x:.2f}" for x in (statistics.median(c for _, c in restarted), max(c for _, c in restarted)))
        + " |",
        f"| other servers' paths out of the FIB during those {args.trials} kills (each watched "
        f"{COLLATERAL_WINDOW:g} s) | {killed_idle.collateral} |",
        f"| resolver killed under {LOAD_RATE:g} queries/s for {LOAD_SECONDS:g} s: queries lost, per trial | "
        + ", ".join(str(k["lost"]) for k in killed)
        + " |",
        "| drained (`anycastctl withdraw dns --wait` on the server) under the same load: queries lost, per trial | "
        + ", ".join(str(d["lost"]) for d in drained)
        + " |",
        *spread_rows(counts, args.flows),
        *(
            f"| at rest, {kind} ({count[kind]} process{'es' if count[kind] > 1 else ''}): CPU, % of a core, all / "
            f"per process; RSS MB, all | {cpu[kind]:.1f} / {cpu[kind] / count[kind]:.2f}; {memory[kind]:,.0f} |"
            for kind in order
        ),
        f"| at rest, one server's sidecar tree (anycastd, ExaBGP, helper), mean, % of a core | {tree / n:.2f} |",
        f"| at rest, the whole lab, % of a core (over {args.cpu_seconds:g} s) | {sum(cpu.values()):.1f} |",
        f"| RSS, the lab's processes together, MB | {sum(memory.values()):,.0f} |",
        f"| lab built and every path in the FIB, s | {built:.1f} |",
    ]
    expected_outside = n * math.erfc(3 / math.sqrt(2))
    publish(
        "bench/ecmp_sidecar.py",
        [
            f"## {n}-way ECMP, the sidecar variant (`bench/ecmp_sidecar.py`)",
            "",
            f"Command: `python bench/ecmp_sidecar.py --servers {n} --trials {args.trials} --flows {args.flows} "
            f"--cpu-seconds {args.cpu_seconds:g} --load-trials {args.load_trials}` (as root).",
            context(),
            f"anycastd_lab.wide's WideBgpLab: {n} servers running Unbound and anycastd at its defaults with its "
            f"ExaBGP, each on its own link to FRR's bgpd (one eBGP session per family, hold time 3 s, "
            f"maximum-paths {max(16, n)}, the import policy from `anycastd frr-policy`), no BFD. Flows and their "
            "count as in bench/ecmp.py's section; with a uniform hash, about "
            f"{expected_outside:.1f} of {n} shares fall outside 3 sigma by chance. Every process of the lab "
            f"shares these {len(os.sched_getaffinity(0))} cores.",
            "",
            *rows,
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
