#!/usr/bin/env python3
"""`anycastd router`: how fast the router's FIB follows a resolver, and what probing 32 servers costs.

Part 1 runs the router-side lab (FRR zebra + staticd, anycastd router on the
router, Unbound on three servers) and times each resolver event to the
router's FIB change, polled every 2 ms, as bench/failover.py does for the
sidecar.

Part 2 points anycastd router at 64 servers probed 10 times a second each:
64 admin addresses on one server namespace, answered by one Unbound (a
lightweight stand-in; only anycastd's own cost is measured). CPU is read
from /proc over a window, after start-up.

With ``--base REV``, part 2 also runs on REV's code (a git worktree), ``--rounds`` labs each,
the trees alternating (bench/report.py's ``alternate``); ``--farm`` runs part 2 alone.

    python bench/router.py [--trials N] [--seconds S] [--base REV] [--rounds N] [--farm] [--quick]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from failover import measure, resolver_scenarios, table
from report import alternate, arguments, context, cpu_percent, publish, rss_mb

from anycastd.config.checks import Check
from anycastd_lab import daemons
from anycastd_lab.clab import STATIC_TOPOLOGY
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import HEALTH_QNAME, SERVICE_V4, Lab, wait_until

HERE = Path(__file__).resolve()
FARM = 64
FARM_ROUTER = "192.0.2.129/25"  # the router's side of the farm's extra subnet, on s1's link
CPU_GOAL = 2.0  # % of one core for FARM servers at PROBES_PER_SECOND each
PROBES_PER_SECOND = 10


def farm_addresses() -> list[str]:
    return [f"192.0.2.{130 + i}" for i in range(FARM)]


def farm_router_config(lab: Lab) -> str:
    rdir = lab.workdir / "router"
    interval = 1 / PROBES_PER_SECOND
    servers = "".join(f"\n      - {{name: f{i + 1}, address: {a}}}" for i, a in enumerate(farm_addresses()))
    return f"""router:
  vtysh: [vtysh, --vty_socket, {rdir}]
runtime_dir: {rdir / "run"}
state_dir: {rdir / "state"}
services:
  dns:
    prefixes: [{SERVICE_V4}]
    checks:
      - qname: {HEALTH_QNAME}
        qtype: TXT
        answer: healthy
        interval: {interval}
        timeout: {interval * 0.8:.2f}
    servers:{servers}
"""


def farm_cost(seconds: float) -> dict[str, float]:
    with Lab(STATIC_TOPOLOGY) as lab:
        server = lab.server_list[0]
        s1 = lab.ns(server.name)
        lab.exec(lab.router, "ip", "addr", "add", FARM_ROUTER, "dev", lab.topology.uplink(server.name)[1].interface)
        for a in farm_addresses():
            lab.exec(s1, "ip", "addr", "add", f"{a}/25", "dev", server.interface)
        conf = lab.workdir / server.name
        conf.mkdir(exist_ok=True)
        (conf / "farm.conf").write_text(daemons.unbound_config(lab, server, farm_addresses()))
        lab.spawn("farm", s1, ["unbound", "-d", "-c", str(conf / "farm.conf")], conf / "farm.log")
        daemons.start_frr(lab, daemons.frr_static_config(), ("zebra", "staticd"))
        proc = daemons.start_anycastd_router(lab, farm_router_config(lab))

        def routed() -> int:
            reply = daemons.anycastctl_router(lab, "status", "--json")
            if reply.returncode != 0:
                return 0
            return len(json.loads(reply.stdout)["services"][0]["routed_via"])

        wait_until(lambda: routed() == FARM, 60, what=f"{FARM} servers routed")
        time.sleep(3)  # steady state
        probes_before, failures_before = _counts(lab)
        t0 = time.monotonic()
        print(f"sampling anycastd router probing {FARM} servers for {seconds:g} s ...", flush=True)
        cpu = cpu_percent([proc.pid], seconds)[proc.pid]
        wall = time.monotonic() - t0
        probes, failures = _counts(lab)
        rate = (probes - probes_before) / wall
        failures -= failures_before
        rss = rss_mb(proc.pid)
        lab.stop(daemons.ROUTER_KEY, signal.SIGTERM)
        print(f"the same probes from a bare asyncio loop, for {seconds:g} s ...", flush=True)
        floor_script = str(Path(__file__).with_name("asyncio_floor.py"))
        argv = [sys.executable, floor_script, "--seconds", str(seconds), *farm_addresses()]
        floor = json.loads(lab.exec(lab.router, *argv).stdout)["cpu"]
        print(f"the same probes from one socket and one timer, for {seconds:g} s ...", flush=True)
        batched = json.loads(lab.exec(lab.router, *argv[:2], "--batched", *argv[2:]).stdout)["cpu"]
        return {
            "cpu": cpu, "rss": rss, "rate": rate, "failures": failures, "wall": wall, "floor": floor,
            "batched": batched,
        }  # fmt: skip


def _mean(runs: list[dict[str, float]]) -> dict[str, Any]:
    """One tree's farm figures over its rounds: the mean of each, and every round's CPU."""
    out: dict[str, Any] = {key: statistics.mean(r[key] for r in runs) for key in runs[0]}
    out["cpus"] = [r["cpu"] for r in runs]
    return out


def _counts(lab: Lab) -> tuple[int, int]:
    """Probes run and probes failed so far, over every server, from `anycastctl status --json`."""
    status = json.loads(daemons.anycastctl_router(lab, "status", "--json").stdout)
    checks = [c for v in status["services"][0]["servers"] for c in v["checks"]]
    return sum(c["probes"] for c in checks), sum(c["failures"] for c in checks)


def main() -> int:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trials", type=int, default=5)
        p.add_argument("--seconds", type=float, default=30.0)
        p.add_argument("--quick", action="store_true", help="2 trials, 5 s windows: a smoke run that writes nothing")
        p.add_argument("--base", help="also measure part 2 on this git revision, alternating with this tree")
        p.add_argument("--rounds", type=int, default=1, help="part 2's labs per tree (default 1)")
        p.add_argument("--farm", action="store_true", help="part 2 only (writes nothing)")
        p.add_argument("--measure", help=argparse.SUPPRESS)

    args = arguments(__doc__, "bench/router.py", add)
    if args is None:
        return 1
    if args.measure:
        Path(args.measure).write_text(json.dumps(farm_cost(args.seconds)))
        return 0
    if args.quick:
        args.trials, args.seconds, args.no_write = 2, 5.0, True
    rows = []
    if not args.farm:
        with StaticLab() as lab:
            rows = measure(lab, args.trials, resolver_scenarios(lab))
    names, runs = alternate(HERE, ["--seconds", str(args.seconds)], args.base, args.rounds)
    costs = [_mean(runs[name]) for name in names]
    cost = costs[-1]
    if args.farm:
        for name, c in zip(names, costs, strict=True):
            print(f"{name}: {c['cpu']:.2f} % of a core (rounds: {', '.join(f'{r:.2f}' for r in c['cpus'])})")
        return 0
    d = Check.__dataclass_fields__
    settings = ", ".join(f"{k} {d[k].default}" for k in ("interval", "timeout", "rise", "fall", "fall_hard"))
    met = "yes" if cost["cpu"] <= CPU_GOAL else "**no**"
    command = f"python bench/router.py --trials {args.trials} --seconds {args.seconds:g}"
    if args.base:
        command += f" --base {args.base} --rounds {args.rounds}"

    def row(label: str, key: str, form: str, goal: str, verdict: str) -> str:
        return f"| {label} | " + " | ".join(form.format(c[key]) for c in costs) + f" | {goal} | {verdict} |"

    publish(
        "bench/router.py",
        [
            "## Router-side variant: `anycastd router`, static routes in FRR",
            "",
            f"Command: `{command}` (as root; `make bench` runs it).",
            context(),
            f"anycastd router defaults: check {settings}; one vtysh call per change, read back after it.",
            "Router: FRR zebra + staticd (frr/static/frr.conf); the servers run Unbound only. The FIB is polled",
            "every 2 ms; each trial starts at a random phase of the probe schedule.",
            "",
            table(rows, args.trials),
            "",
            f"Probing {FARM} servers at {PROBES_PER_SECOND} probes/s each (interval {1 / PROBES_PER_SECOND:g} s), "
            f"sampled over {cost['wall']:.0f} s, {args.rounds} lab(s) per tree, the mean of them:",
            "",
            "| measure | " + " | ".join(names) + " | goal | met |",
            "|---|" + "---:|" * len(names) + "---:|:---:|",
            row("probes per second, achieved", "rate", "{:.0f}", f"{FARM * PROBES_PER_SECOND}", "-"),
            row("failed probes in the window", "failures", "{:.0f}", "-", "-"),
            row("anycastd router CPU, % of one core", "cpu", "{:.2f}", f"<= {CPU_GOAL:g}", met),
            row("anycastd router RSS, MB", "rss", "{:.0f}", "-", "-"),
            row(
                "floor: one asyncio task per server, send and await only (bench/asyncio_floor.py), CPU %",
                "floor",
                "{:.2f}",
                "-",
                "-",
            ),
            row(
                "floor: one socket, one timer, send and drain only (asyncio_floor.py --batched), CPU %",
                "batched",
                "{:.2f}",
                "-",
                "-",
            ),
            "",
            "anycastd router probes every UDP check from one socket per family and one timer",
            "(anycastd.daemons.engine).",
            "The batched floor is what the kernel and the event loop cost for the same packets with no parsing,",
            "no health machine and no metrics: anycastd router's cost above it is its own work per probe.",
            *(
                []
                if cost["cpu"] <= CPU_GOAL
                else [
                    "",
                    f"The CPU goal is missed: {cost['cpu']:.2f} % against a floor of {cost['batched']:.2f} % "
                    f"({cost['cpu'] / max(cost['batched'], 0.01):.1f} times the floor).",
                ]
            ),
        ],
        write=not args.no_write,
    )
    print(f"median killed: {statistics.median(rows[0][2]) * 1000:.0f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
