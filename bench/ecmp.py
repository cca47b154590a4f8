#!/usr/bin/env python3
"""64-way ECMP, the router-side variant: start, a killed resolver, the spread of flows, CPU and memory.

anycastd_lab.wide builds the router-side lab with N Unbound servers (64 by default) from a
generated containerlab file, each on its own /30 and /64 to the router, and `anycastd router`
(defaults: a probe every 0.2 s) keeps one static path per healthy server through FRR's staticd.

* start: from `anycastd router`'s start (every resolver already answering) until the router's
  kernel FIB holds all N paths, both families;
* killed: a random server's resolver SIGKILLed at a random phase, until its path leaves the
  FIB (polled every 2 ms); then restarted, until it is back;
* spread: FLOWS distinct UDP flows (source address and port) from the client to the service
  address, one datagram each, counted per server interface on the router (nftables); a uniform
  hash gives each server Binomial(FLOWS, 1/N), and each share's distance from the mean is
  given in standard deviations;
* CPU of `anycastd router` at rest, and the resident memory of the lab's processes.

With ``--base REV``, the CPU at rest and one read of the router's FIB (anycastd.watch.fib's
NetlinkFib, as the periodic resync does it) are measured again in labs of their own, on REV's code
(a git worktree) and on this tree's, ``--rounds`` labs each, the trees alternating
(bench/report.py's ``alternate``).

    python bench/ecmp.py [--servers 64] [--trials 10] [--flows 100000] [--cpu-seconds 20] [--base REV --rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detection import verdict_at
from report import alternate, arguments, context, cpu_split, publish, revision, rss_mb

from anycastd_lab import daemons
from anycastd_lab.base import DnsLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Server
from anycastd_lab.wide import MOST, WideLab, deviations, equal_share, spread

#: The probe interval's span: each trial's kill falls at a random phase of it.
PHASE = 0.2
#: `anycastd router`'s default periodic read of FRR (router.resync), and the lab's.
RESYNC, LAB_RESYNC = 10.0, 1.0
#: The client's load while a server is killed or drained: LOAD_RATE queries/s, each its own flow, for LOAD_SECONDS.
LOAD_RATE, LOAD_SECONDS = 500.0, 3.0
ADDRESS = SERVICE_V4.split("/")[0]
#: The check at 10 probes/s per server (as bench/router.py's farm), added to the lab's check.
FAST = "\n        interval: 0.1\n        timeout: 0.08"
HERE = Path(__file__).resolve()
#: One read of the FIB of the namespace it runs in, as `anycastd router`'s resync reads it: CPU ms per read.
FIB_READ = """
import ipaddress, json, sys, time
from anycastd.watch.fib import NetlinkFib
prefixes = [ipaddress.ip_network(p) for p in sys.argv[2:]]
fib, reads = NetlinkFib(), int(sys.argv[1])
hops = fib.read(prefixes)
started = time.process_time()
for _ in range(reads):
    fib.read(prefixes)
print(json.dumps({"ms": (time.process_time() - started) / reads * 1000, "hops": [len(h) for h in hops.values()]}))
"""
FIB_READS = 50
#: Kills per lab in the before/after comparison.
COMPARED_KILLS = 10
SERVICE_PREFIXES = (SERVICE_V4, SERVICE_V6)
#: How long after each kill the other servers' paths are watched (every 2 ms): a withdrawal wrongly taken to
#: them comes within a probe round or two.
COLLATERAL_WINDOW = 1.0


def chi_square(counts: list[int]) -> tuple[float, float]:
    """Pearson's statistic of ``counts`` against equal shares, and its p-value (Wilson-Hilferty's normal
    approximation of the chi-square distribution, close at these degrees of freedom)."""
    mean = sum(counts) / len(counts)
    statistic = sum((c - mean) ** 2 / mean for c in counts)
    k = len(counts) - 1
    z = ((statistic / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return statistic, 0.5 * math.erfc(z / math.sqrt(2))


@dataclass
class Kills:
    """Each trial's seconds: kill -> the router's verdict (its log), kill -> path gone, restart -> back."""

    verdict: list[float] = field(default_factory=list)
    gone: list[float] = field(default_factory=list)
    back: list[float] = field(default_factory=list)
    collateral: int = 0  # other servers' paths out of the FIB meanwhile

    @property
    def router(self) -> list[float]:
        """Each trial's verdict -> gone: FRR and the kernel."""
        return [g - v for g, v in zip(self.gone, self.verdict, strict=True)]

    def row(self, label: str, who: str = "the router's", path: str = "FRR and the kernel") -> str:
        """The three rows of these kills: ``who`` decided, through ``path`` to the FIB."""
        router = self.router
        return (
            f"| {label}: killed -> gone, median / max ms (n = {len(self.gone)}) | {ms(self.gone)} |\n"
            f"| of which the probe's phase (killed -> {who} verdict), median / max ms | {ms(self.verdict)} |\n"
            f"| of which the verdict -> gone ({path}), median / max ms | {ms(router)} |"
        )


def spread_rows(counts: dict[str, int], flows: int) -> list[str]:
    """The rows of ``flows`` flows sent and ``counts`` of them counted per server: each share against a uniform
    hash's (anycastd_lab.wide.deviations), and Pearson's test of the whole."""
    n, total = len(counts), sum(counts.values())
    mean, sigma = equal_share(counts)
    away = deviations(counts)
    worst = max(away, key=lambda name: abs(away[name]))
    within = sum(1 for d in away.values() if abs(d) <= 3)
    statistic, p_value = chi_square(list(counts.values()))
    return [
        f"| flows sent / forwarded and counted | {flows:,} / {total:,} |",
        f"| expected per server (N/{n}) and its standard deviation | {mean:,.1f} ± {sigma:.1f} "
        f"({sigma / mean * 100:.1f} %) |",
        f"| fewest / most flows on one server | {min(counts.values()):,} / {max(counts.values()):,} |",
        f"| farthest from the mean | {worst}: {away[worst]:+.2f} sigma |",
        f"| servers within 3 sigma of 1/{n} | {within} of {n} |",
        f"| chi-square against equal shares ({n - 1} degrees of freedom), p-value | {statistic:.1f}, {p_value:.2f} |",
    ]


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} / {max(xs) * 1000:.0f}"


def router_verdicts(lab: DnsLab) -> Callable[[Server], tuple[Path, re.Pattern[str]]]:
    """Where `anycastd router` logs its verdict on a server's resolver, and the line."""
    logfile = daemons.router_paths(lab.lab)[1]
    return lambda victim: (logfile, re.compile(rf"^(\S+ \S+) \w+ \S+: \w+/{victim.name}: \w+ -> down ", re.M))


def kills(
    lab: DnsLab,
    trials: int,
    victims: Iterator[Server],
    verdicts: Callable[[Server], tuple[Path, re.Pattern[str]]] | None = None,
) -> Kills:
    """``trials`` resolvers killed at a random phase, one at a time: when the controller logged each one
    down (``verdicts``: its log file and line; `anycastd router`'s by default), when its path left the FIB
    and when it was back after a restart, and how many other servers' paths left it meanwhile."""
    out = Kills()
    everyone = frozenset(s.v4 for s in lab.servers)
    verdicts = verdicts or router_verdicts(lab)
    for trial in range(trials):
        victim = next(victims)
        logfile, pattern = verdicts(victim)
        time.sleep(random.uniform(0, PHASE))
        offset = logfile.stat().st_size
        with FibWatch(lab.lab.router, SERVICE_V4) as watch:
            wall = time.time()
            lab.kill_resolver(victim)
            out.gone.append(lab.wait_server(victim, present=False, timeout=5))
            time.sleep(COLLATERAL_WINDOW)
        with logfile.open() as log:
            log.seek(offset)
            verdict = verdict_at(log.read(), wall, pattern)
        if verdict is None:
            raise RuntimeError(f"{victim.name}: no verdict in {logfile}")
        out.verdict.append(verdict)
        missing = {hop for hops in watch.seen() for hop in everyone - hops} - {victim.v4}
        out.collateral += len(missing)
        lab.start_resolver(victim, wait=False)
        out.back.append(lab.wait_server(victim, present=True, timeout=10))
        lab.wait_paths(len(everyone), timeout=10)
        print(
            f"  trial {trial + 1}: {victim.name} down {verdict * 1000:.0f} ms, gone {out.gone[-1] * 1000:.0f} ms; "
            f"others out: {len(missing)}"
        )
    return out


def under_load(
    lab: DnsLab, victim: Server, act: Callable[[Server], None], undo: Callable[[Server], None]
) -> dict[str, Any]:
    """Queries at LOAD_RATE from the client for LOAD_SECONDS, ``act`` on ``victim`` a second in and
    ``undo`` once the client is done: the client's count of lost queries, and the victim's answers."""
    load = lab.client(ADDRESS, count=int(LOAD_RATE * LOAD_SECONDS), rate=LOAD_RATE)
    time.sleep(1.0)
    act(victim)
    result = lab.client_result(load)
    undo(victim)
    lab.wait_paths(len(lab.servers), timeout=15)
    return {"server": victim.name, "lost": result["lost"], "answered": result["answered"].get(victim.name, 0)}


def at_rest(lab: WideLab, seconds: float, extra: str) -> tuple[float, float]:
    """`anycastd router` started again with ``extra`` settings added to the lab's check: its user and system
    CPU at rest."""
    lab.stop_anycastd()
    answer = "answer: healthy"
    lab.start_anycastd(daemons.router_config(lab.lab, resync=lab.resync).replace(answer, answer + extra, 1))
    lab.wait_paths(len(lab.servers), timeout=30)
    return resting(lab, seconds)


def resting(lab: WideLab, seconds: float) -> tuple[float, float]:
    """`anycastd router`'s user and system CPU over ``seconds``, once 3 s past its start-up."""
    time.sleep(3)
    return cpu_split(lab.lab.processes[daemons.ROUTER_KEY].pid, seconds)


def floor_cpu(lab: WideLab, seconds: float) -> float:
    """`anycastd router` stopped, the least a Python prober costs for the same probes from the router
    (bench/asyncio_floor.py --batched: one socket, one timer, send and drain only), % of a core."""
    lab.stop_anycastd()
    floor = [sys.executable, str(HERE.with_name("asyncio_floor.py")), "--batched", "--seconds", f"{seconds:g}"]
    run = lab.lab.exec(lab.lab.router, *floor, "--interval", "0.1", *(s.v4 for s in lab.servers))
    cpu: float = json.loads(run.stdout)["cpu"]
    return cpu


def cost(n: int, seconds: float) -> dict[str, Any]:
    """One lab's `anycastd router` at rest (defaults, FAST, the lab's resync), one FIB read's CPU, and
    COMPARED_KILLS kills at the defaults: their times and the divergences the router reported meanwhile."""
    with WideLab(n, resync=RESYNC) as lab:
        out: dict[str, Any] = {"rest": resting(lab, seconds)}
        logfile = daemons.router_paths(lab.lab)[1]
        reported = divergences(logfile)
        killed = kills(lab, min(COMPARED_KILLS, n), itertools.cycle(random.sample(lab.servers, n)))  # none twice
        out["kills"] = {"gone": killed.gone, "verdict": killed.verdict, "divergences": divergences(logfile) - reported}
        out["fast"] = at_rest(lab, seconds, FAST)
        lab.resync = LAB_RESYNC
        out["lab"] = at_rest(lab, seconds, "")
        read = lab.lab.exec(lab.lab.router, sys.executable, "-c", FIB_READ, str(FIB_READS), *SERVICE_PREFIXES)
        out["fib"] = json.loads(read.stdout)
    return out


def divergences(logfile: Path) -> int:
    """How many times `anycastd router` has logged the kernel's FIB disagreeing with zebra."""
    return logfile.read_text().count("the kernel's FIB disagrees with zebra")


def before_after(base: str, rounds: int, n: int, seconds: float) -> list[str]:
    """``cost`` on ``base``'s code and this tree's, ``rounds`` labs each by turns: the paragraph and table."""
    names, runs = alternate(HERE, ["--servers", str(n), "--cpu-seconds", str(seconds)], base, rounds)
    return [
        "",
        f"Before and after, in one run (`--base {base} --rounds {rounds}`, {revision(base)}): {rounds} labs of {n} "
        "servers per tree, the trees alternating; each figure a mean over its rounds.",
        "",
        *compared(names, runs, seconds),
    ]


def compared(names: list[str], runs: dict[str, list[dict[str, Any]]], seconds: float) -> list[str]:
    """The table of the trees' figures side by side: each a mean over its rounds."""

    def mean(name: str, key: str, i: int) -> float:
        return float(statistics.mean(r[key][i] for r in runs[name]))

    def total(name: str, key: str) -> str:
        return " / ".join(f"{r[key][0] + r[key][1]:.2f}" for r in runs[name])

    def row(label: str, key: str) -> str:
        cells = [f"{mean(nm, key, 0):.2f} + {mean(nm, key, 1):.2f} ({total(nm, key)})" for nm in names]
        return f"| {label} | " + " | ".join(cells) + " |"

    reads = [statistics.mean(r["fib"]["ms"] for r in runs[nm]) for nm in names]
    pooled = {
        nm: Kills(
            verdict=[v for r in runs[nm] for v in r["kills"]["verdict"]],
            gone=[g for r in runs[nm] for g in r["kills"]["gone"]],
        )
        for nm in names
    }
    return [
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        row(f"anycastd router at rest, defaults (a probe every 0.2 s, resync {RESYNC:g} s): user + system "
            f"(each round's total), % of a core over {seconds:g} s", "rest"),
        row("the same, a probe every 0.1 s", "fast"),
        row(f"the same, resync {LAB_RESYNC:g} s", "lab"),
        "| one read of the router's FIB (NetlinkFib.read, both families), CPU ms | "
        + " | ".join(f"{ms:.1f}" for ms in reads)
        + " |",
        f"| a resolver killed at the defaults ({len(runs[names[0]][0]['kills']['gone'])} per lab, each a different "
        "server): killed -> gone, "
        "median / max ms | "
        + " | ".join(ms(pooled[nm].gone) for nm in names) + " |",
        "| of which the verdict -> gone, median / max ms | "
        + " | ".join(ms(pooled[nm].router) for nm in names) + " |",
        "| divergences between zebra and the kernel the router reported meanwhile (its log), per round | "
        + " | ".join(", ".join(str(r["kills"]["divergences"]) for r in runs[nm]) for nm in names) + " |",
    ]  # fmt: skip


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--servers", type=int, default=MOST, help=f"servers (default and most {MOST})")
    p.add_argument("--trials", type=int, default=10, help="resolvers killed, one at a time (default 10)")
    p.add_argument("--flows", type=int, default=100_000, help="distinct flows for the spread (default 100,000)")
    p.add_argument("--cpu-seconds", type=float, default=20.0, help="the CPU sample (default 20 s)")
    p.add_argument("--load-trials", type=int, default=3, help="kills and drains under client load (default 3)")
    p.add_argument("--base", help="also measure CPU at rest and a FIB read on this git revision, alternating")
    p.add_argument("--rounds", type=int, default=2, help="labs per tree with --base (default 2)")
    p.add_argument("--measure", help=argparse.SUPPRESS)


def main() -> int:
    args = arguments(__doc__, "bench/ecmp.py", _options)
    if args is None:
        return 1
    n = args.servers
    if args.measure:
        Path(args.measure).write_text(json.dumps(cost(n, args.cpu_seconds)))
        return 0
    built = time.monotonic()
    with WideLab(n, resync=RESYNC) as lab:
        built = time.monotonic() - built
        print(f"all {n} paths {lab.ready_in * 1000:.0f} ms after anycastd router started", flush=True)
        cpu = resting(lab, args.cpu_seconds)
        memory: dict[str, float] = {}
        for key, pid in lab.pids().items():
            kind = "Unbound, all servers" if key.startswith("resolver-") else key
            memory[kind] = memory.get(kind, 0.0) + rss_mb(pid)
        # Each kill takes the next server of one shuffled round: a server killed three times within a minute
        # would be held out by flap damping (its penalty passes 2000), as it should be, and stall the trial.
        victims = itertools.cycle(random.sample(lab.servers, n))
        killed_default = kills(lab, args.trials, victims)
        counts = spread(lab, args.flows)

        def kill(victim: Server) -> None:
            lab.kill_resolver(victim)
            lab.wait_server(victim, present=False, timeout=5)

        def drain(victim: Server) -> None:
            reply = lab.anycastctl("withdraw", "--server", victim.name, "--reason", "bench", "--wait")
            if reply.returncode != 0:
                raise RuntimeError(f"anycastctl withdraw --server {victim.name}: {reply.stderr.strip()}")

        def announce(victim: Server) -> None:
            lab.anycastctl("announce", "--server", victim.name)

        restart = lambda v: lab.start_resolver(v, wait=False)  # noqa: E731
        killed = [under_load(lab, next(victims), kill, restart) for _ in range(args.load_trials)]
        drained = [under_load(lab, next(victims), drain, announce) for _ in range(args.load_trials)]
        cpu_fast = at_rest(lab, args.cpu_seconds, FAST)
        killed_fast = kills(lab, args.trials, victims)  # the router still probes every 0.1 s
        lab.resync = LAB_RESYNC
        cpu_lab = at_rest(lab, args.cpu_seconds, "")
        floor = floor_cpu(lab, args.cpu_seconds)
    side_by_side = before_after(args.base, args.rounds, n, args.cpu_seconds) if args.base else []

    def split(c: tuple[float, float]) -> str:
        return f"{c[0]:.2f} + {c[1]:.2f} = {c[0] + c[1]:.2f}"

    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| servers (paths per family) | {n} |",
        f"| start -> all {n} paths in the FIB, both families, ms | {lab.ready_in * 1000:,.0f} |",
        killed_default.row(f"a resolver killed, defaults (a probe every {PHASE:g} s)"),
        f"| restarted -> back, median / max ms | {ms(killed_default.back)} |",
        killed_fast.row("a resolver killed, a probe every 0.1 s"),
        f"| other servers' paths out of the FIB during those {args.trials * 2} kills (each watched "
        f"{COLLATERAL_WINDOW:g} s) | {killed_default.collateral + killed_fast.collateral} |",
        f"| resolver killed under {LOAD_RATE:g} queries/s: queries lost, per trial | "
        + ", ".join(str(k["lost"]) for k in killed)
        + " |",
        "| drained (`anycastctl withdraw --server S --wait`) under the same load: queries lost, per trial | "
        + ", ".join(str(d["lost"]) for d in drained)
        + " |",
        *spread_rows(counts, args.flows),
        f"| anycastd router at rest, % of a core, user + system = total (over {args.cpu_seconds:g} s; defaults: a "
        f"probe every 0.2 s, resync {RESYNC:g} s) | {split(cpu)} |",
        f"| the same, a probe every 0.1 s ({n} x 10 probes/s) | {split(cpu_fast)} |",
        f"| the same, a probe every 0.2 s and resync {LAB_RESYNC:g} s (the lab's) | {split(cpu_lab)} |",
        f"| floor: the same {n} x 10 probes/s from one socket and one timer, send and drain only "
        f"(bench/asyncio_floor.py --batched), user + system | {floor:.2f} |",
        *(f"| RSS, {kind}, MB | {mb:,.0f} |" for kind, mb in sorted(memory.items())),
        f"| RSS, the lab's processes together, MB | {sum(memory.values()):,.0f} |",
        f"| lab built and every path in the FIB, s | {built:.1f} |",
    ]
    expected_outside = n * math.erfc(3 / math.sqrt(2))
    publish(
        "bench/ecmp.py",
        [
            f"## {n}-way ECMP, the router-side variant (`bench/ecmp.py`)",
            "",
            f"Command: `python bench/ecmp.py --servers {n} --trials {args.trials} --flows {args.flows} "
            f"--cpu-seconds {args.cpu_seconds:g} --load-trials {args.load_trials}"
            + (f" --base {args.base} --rounds {args.rounds}" if args.base else "")
            + "` (as root).",
            context(),
            f"anycastd_lab.wide: FRR (zebra, staticd) and `anycastd router` at its defaults on the router, {n} "
            "servers running Unbound, each on its own link. The flows are one UDP datagram each from distinct "
            "(source address, source port) pairs to the service address, counted per server interface in the "
            "router's forward path; the router hashes on layer 4 (fib_multipath_hash_policy = 1). With a "
            f"uniform hash, about {expected_outside:.1f} of {n} shares fall outside 3 sigma by chance, and the "
            "chi-square test's p-value is uniform on (0, 1): a small one (below 0.01) says the hash is not even.",
            "",
            *rows,
            *side_by_side,
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
