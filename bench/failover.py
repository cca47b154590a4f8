#!/usr/bin/env python3
"""How fast does the router's FIB follow a failure? Measured in the namespace lab.

Each trial does one thing to one server (rotating over the servers) and times
it from the action to the moment the router's kernel FIB changes, polled
every 2 ms with pyroute2 in the router's namespace. The lab runs anycastd with
its default check settings. Prints a table and writes it into
docs/benchmarks.md between this script's markers.

    python bench/failover.py [--trials N]
"""

from __future__ import annotations

import random
import signal
import statistics
import sys
import time
from collections.abc import Callable

from report import arguments, context, publish

from anycastd.config.checks import Check
from anycastd_lab.base import DnsLab
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import Server

Scenario = tuple[str, float | None, Callable[[Server], None], Callable[[Server], None], bool]


def resolver_scenarios(lab: DnsLab) -> list[Scenario]:
    """What happens to a resolver, for either variant: (name, goal in s, action, undo, path present afterwards)."""
    return [
        (
            "resolver killed (SIGKILL) -> path gone",
            0.25,
            lab.kill_resolver,
            lambda s: lab.start_resolver(s, wait=False),
            False,
        ),
        ("resolver restarted -> path back", 1.0, lambda s: lab.start_resolver(s, wait=False), lambda s: None, True),
        (
            "resolver frozen (SIGSTOP) -> path gone",
            1.0,
            lambda s: lab.signal_resolver(s, signal.SIGSTOP),
            lambda s: None,
            False,
        ),
        (
            "resolver thawed (SIGCONT) -> path back",
            1.0,
            lambda s: lab.signal_resolver(s, signal.SIGCONT),
            lambda s: None,
            True,
        ),
    ]


def scenarios(lab: BgpLab) -> list[Scenario]:
    """The resolver's failures, and the sidecar's own."""
    return [
        *resolver_scenarios(lab),
        ("anycastd killed (SIGKILL) -> path gone", 1.0, lab.kill_anycastd, lab.start_anycastd, False),
        (
            "anycastd frozen (SIGSTOP) -> path gone",
            3.0,
            lambda s: lab.signal_anycastd(s, signal.SIGSTOP),
            lambda s: lab.signal_anycastd(s, signal.SIGCONT),
            False,
        ),
    ]


def trial_times(
    lab: DnsLab,
    trials: int,
    case: Scenario,
    restore: Callable[[], None],
    give_up: float = 20.0,
) -> list[float | None]:
    """Seconds from the action to the FIB change, per trial; None where nothing changed within ``give_up``."""
    name, _, action, undo, present = case
    times: list[float | None] = []
    for trial in range(trials):
        victim = lab.servers[trial % len(lab.servers)]
        if name.startswith("resolver restarted"):
            lab.kill_resolver(victim)
            lab.wait_server(victim, present=False, timeout=give_up * 2)
        if name.startswith("resolver thawed"):
            lab.signal_resolver(victim, signal.SIGSTOP)
            lab.wait_server(victim, present=False, timeout=give_up * 2)
        time.sleep(random.uniform(0.2, 0.6))  # start at a random phase of the probe schedule
        t0 = time.monotonic()
        action(victim)
        try:
            lab.wait_server(victim, present=present, timeout=give_up)
            took = time.monotonic() - t0
            times.append(took)
            said = f"{took * 1000:.0f} ms"
        except TimeoutError:
            times.append(None)
            said = f"no change within {give_up:g} s"
        undo(victim)
        restore()
        print(f"  {name}: trial {trial + 1}/{trials} on {victim.name}: {said}", flush=True)
    return times


def measure(lab: DnsLab, trials: int, cases: list[Scenario]) -> list[tuple[str, float | None, list[float]]]:
    rows = []
    for case in cases:
        times = trial_times(lab, trials, case, lab.restore)
        if None in times:
            raise RuntimeError(f"{case[0]}: the FIB did not change in some trials")
        rows.append((case[0], case[1], [t for t in times if t is not None]))
    return rows


def table(rows: list[tuple[str, float | None, list[float]]], trials: int) -> str:
    out = [
        f"| event -> router FIB change (n = {trials}) | median | min | max | goal | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, goal, times in rows:
        med = statistics.median(times)
        met = "yes" if goal is None or med <= goal else "**no**"
        goal_text = f"<= {goal * 1000:.0f} ms" if goal else "-"
        cells = [name, *(f"{t * 1000:.0f} ms" for t in (med, min(times), max(times))), goal_text, met]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    args = arguments(__doc__, "bench/failover.py", lambda p: p.add_argument("--trials", type=int, default=10))
    if args is None:
        return 1
    with BgpLab() as lab:
        rows = measure(lab, args.trials, scenarios(lab))
    d = Check.__dataclass_fields__
    settings = ", ".join(f"{k} {d[k].default}" for k in ("interval", "timeout", "rise", "fall", "fall_hard"))
    publish(
        "bench/failover.py",
        [
            "## Failover: from the event to the router's FIB (sidecar, BGP via ExaBGP)",
            "",
            f"Command: `python bench/failover.py --trials {args.trials}` (as root; `make bench-sidecar` runs it).",
            context(),
            f"anycastd defaults: check {settings}; exabgp.watchdog 1.5 s, exabgp.stall 0.25 s. "
            "Router: FRR, eBGP, hold time 3 s.",
            "The FIB is polled every 2 ms with pyroute2 in the router's namespace; each trial starts at a random",
            "phase of the probe schedule. 'Restarted' includes Unbound's own start-up time.",
            "",
            table(rows, args.trials),
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
