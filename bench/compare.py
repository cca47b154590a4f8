#!/usr/bin/env python3
"""anycastd beside `exabgp healthcheck`, in the same lab and the same run.

Each controller in turn runs on all three servers of the sidecar lab (FRR,
eBGP, ECMP), announcing 203.0.113.53/32 and 2001:db8::53/128:

- anycastd with its defaults;
- ExaBGP's own health checker (`python -m exabgp healthcheck`, shipped with
  ExaBGP) with its default options, and with its fastest ones
  (--interval 1 --fast-interval 1 --rise 1 --fall 1 --timeout 1), checking the
  resolver with dig.

Every event is timed from the action to the change in the router's kernel
FIB (polled every 2 ms); an event that changes nothing is waited for up to a
give-up time and reported as such. Prints one table per question and writes
them into docs/benchmarks.md.

    python bench/compare.py [--trials 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from failover import Scenario, resolver_scenarios, trial_times
from report import arguments, context, publish
from resources import cpu_seconds, rss_mb

from anycastd.config import DnsCheck
from anycastd.lab import daemons
from anycastd.lab.bgp import BgpLab
from anycastd.lab.topology import HEALTH_QNAME, ROUTER_ASN, SERVICE_V4, SERVICE_V6, Server

FASTEST = "--interval 1 --fast-interval 1 --rise 1 --fall 1 --timeout 1"
#: How ExaBGP is run for the health checker: in the foreground, as root, connecting out only.
EXABGP_ENV = {
    "exabgp_daemon_daemonize": "false",
    "exabgp_daemon_user": "root",
    "exabgp_daemon_pid": "",
    "exabgp_tcp_bind": "",
    "exabgp_api_cli": "false",
    "exabgp_log_destination": "stdout",
}


@dataclass(frozen=True)
class Controller:
    label: str
    healthcheck: str | None  # None: anycastd; otherwise `exabgp healthcheck`'s options
    interval: float  # seconds between checks while nothing changes


ANYCASTD = Controller("anycastd, defaults", None, DnsCheck(ipaddress.ip_address("192.0.2.1")).interval)
HC_DEFAULTS = Controller("exabgp healthcheck, defaults", "--withdraw-on-down", 5.0)
HC_FASTEST = Controller("exabgp healthcheck, fastest", f"{FASTEST} --withdraw-on-down", 1.0)
HC_AS_SHIPPED = Controller("exabgp healthcheck, defaults without --withdraw-on-down", "", 5.0)
RATE = 1000  # queries per second from the client, for question 6
CONTROLLERS = [ANYCASTD, HC_DEFAULTS, HC_FASTEST]

Times = list[float | None]


def check_script(s: Server) -> str:
    """The health check the checker runs: dig asks the resolver's admin address, as anycastd does."""
    return f"""#!/bin/sh
dig +short +time=1 +tries=1 @{s.v4} {HEALTH_QNAME} TXT | grep -qx '"healthy"'
"""


def healthcheck_config(s: Server, check: Path, disable: Path, options: str) -> str:
    """ExaBGP's configuration as an operator writes it from `exabgp healthcheck --help`;
    ``disable`` is the file whose presence drains the server (--disable)."""
    argv = [
        sys.executable, "-m", "exabgp", "healthcheck", "--no-syslog", "--name", "dns",
        "--cmd", str(check), "--disable", str(disable),
        "--ip", SERVICE_V4, "--ip", SERVICE_V6, "--no-ip-setup", options,
    ]  # fmt: skip
    lines = ["process healthcheck {", f"    run {' '.join(a for a in argv if a)};", "    encoder text;", "}"]
    for peer, local, family in ((s.router_v4, s.v4, "ipv4 unicast"), (s.router_v6, s.v6, "ipv6 unicast")):
        lines += [
            f"neighbor {peer} {{",
            f"    router-id {s.v4};",
            f"    local-address {local};",
            f"    local-as {s.asn};",
            f"    peer-as {ROUTER_ASN};",
            "    hold-time 3;",
            f"    family {{ {family}; }}",
            "    api { processes [ healthcheck ]; }",
            "}",
        ]
    return "\n".join(lines) + "\n"


class Running:
    """The lab with one controller on every server; restore() brings it back to three paths."""

    def __init__(self, lab: BgpLab, controller: Controller) -> None:
        self.lab = lab
        self.controller = controller

    def key(self, s: Server) -> str:
        return f"exabgp-healthcheck-{s.name}"

    def __enter__(self) -> Running:
        if self.controller.healthcheck is not None:
            for s in self.lab.servers:
                self.lab.lab.stop(daemons.anycastd_key(s), signal.SIGTERM)
                ns = self.lab.lab.ns(s.name)
                for prefix in (SERVICE_V4, SERVICE_V6):  # what --no-ip-setup expects to find
                    self.lab.lab.exec(ns, "ip", "addr", "replace", prefix, "dev", "lo")
                self.start_controller(s)
        self.restore()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.controller.healthcheck is not None:
            for s in self.lab.servers:
                self.stop_healthcheck(s)
            self.lab.restore()

    # the controller's processes ---------------------------------------------------------------------------

    def roles(self, s: Server) -> dict[int, str]:
        """The controller's processes on ``s`` by role: anycastd, its ExaBGP and helper; or ExaBGP and the checker."""
        roles = {pid: self._role(argv) for pid, argv in self.lab.lab.commands(s.name).items()}
        return {pid: role for pid, role in roles.items() if role}

    def pids(self, s: Server) -> list[int]:
        return list(self.roles(s))

    @staticmethod
    def _role(argv: list[bytes]) -> str:
        if b"healthcheck" in argv:
            return "healthcheck"
        if b"exabgp" in argv:
            return "exabgp"
        if any(a.endswith(b"exabgp_helper.py") for a in argv):
            return "helper"
        if b"anycastd" in argv and b"run" in argv:
            return "anycastd"
        return ""

    def checker_pids(self, s: Server) -> list[int]:
        role = "anycastd" if self.controller is ANYCASTD else "healthcheck"
        return [pid for pid, r in self.roles(s).items() if r == role]

    def start_controller(self, s: Server) -> None:
        if self.controller.healthcheck is None:
            self.lab.start_anycastd(s)
            return
        sdir = self.lab.lab.workdir / s.name
        conf = sdir / "exabgp-healthcheck.conf"
        check = sdir / "check-dns"
        check.write_text(check_script(s))
        check.chmod(0o755)
        conf.write_text(healthcheck_config(s, check, self.disable_file(s), self.controller.healthcheck))
        argv = ["env", *(f"{k}={v}" for k, v in EXABGP_ENV.items()), sys.executable, "-m", "exabgp", str(conf)]
        self.lab.lab.spawn(self.key(s), self.lab.lab.ns(s.name), argv, sdir / "exabgp-healthcheck.log")

    def disable_file(self, s: Server) -> Path:
        return self.lab.lab.workdir / s.name / "disable"

    def stop_healthcheck(self, s: Server) -> None:
        leftovers = self.pids(s)
        self.lab.lab.stop(self.key(s), signal.SIGKILL)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def signal_checker(self, s: Server, sig: int) -> None:
        for pid in self.checker_pids(s):
            os.kill(pid, sig)

    def kill_controller(self, s: Server) -> None:
        self.signal_checker(s, signal.SIGKILL)

    def restore(self) -> None:
        if self.controller.healthcheck is None:
            self.lab.restore()
            return
        for s in self.lab.servers:
            if self.lab.resolver_running(s):
                self.lab.signal_resolver(s, signal.SIGCONT)
            else:
                self.lab.start_resolver(s)
            proc = self.lab.lab.processes.get(self.key(s))
            if proc is None or proc.poll() is not None or not self.checker_pids(s):
                self.stop_healthcheck(s)  # ExaBGP did not bring its checker back: start over
                self.start_controller(s)
            self.signal_checker(s, signal.SIGCONT)
        self.lab.wait_paths(len(self.lab.servers), timeout=90)

    # the questions ----------------------------------------------------------------------------------------

    def cases(self) -> dict[str, Scenario]:
        killed, restarted, frozen, _ = resolver_scenarios(self.lab)
        return {
            "killed": killed,
            "frozen": frozen,
            "back": restarted,
            "controller killed": (
                "controller killed (SIGKILL) -> path gone",
                1.0,
                self.kill_controller,
                lambda s: None,
                False,
            ),
            "controller frozen": (
                "controller frozen (SIGSTOP) -> path gone",
                3.0,
                lambda s: self.signal_checker(s, signal.SIGSTOP),
                lambda s: self.signal_checker(s, signal.SIGCONT),
                False,
            ),
        }

    def lost(self, s: Server, planned: bool) -> tuple[int, float]:
        """Queries lost at RATE/s when ``s``'s resolver is killed, unannounced or after a drain; the drain's wait.

        A drain is what an operator does with each tool: `anycastctl withdraw dns --wait`, which returns
        once no query arrives; or `touch` the --disable file of `exabgp healthcheck`, which gives no
        signal, and wait one check interval and a second more before stopping the resolver."""
        seconds = 3.0 + 4 * self.controller.interval  # the failure, its detection, and a margin
        load = self.lab.client(SERVICE_V4.split("/")[0], int(RATE * (seconds + 1.0)), RATE)
        time.sleep(1.0)
        waited = 0.0
        if planned:
            t0 = time.monotonic()
            if self.controller.healthcheck is None:
                reply = self.lab.anycastctl(s, "withdraw", "dns", "--reason", "bench", "--wait")
                if reply.returncode != 0:
                    raise RuntimeError(f"anycastctl withdraw failed: {reply.stderr}")
            else:
                self.disable_file(s).touch()
                time.sleep(self.controller.interval + 1.0)
            waited = time.monotonic() - t0
        self.lab.kill_resolver(s)
        result = self.lab.client_result(load, timeout=seconds + 60)
        if planned:
            if self.controller.healthcheck is None:
                self.lab.anycastctl(s, "announce", "dns")
            else:
                self.disable_file(s).unlink()
        self.restore()
        return int(result["lost"]), waited

    def cost(self, seconds: float) -> dict[str, float]:
        """CPU (% of one core) and RSS (MB) per server, the controller's processes summed; anycastd alone too."""
        time.sleep(3)
        roles = {pid: role for s in self.lab.servers for pid, role in self.roles(s).items()}
        before = {p: cpu_seconds(p, children=True) for p in roles}
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        cpu = {p: (cpu_seconds(p, children=True) - before[p]) / wall * 100 for p in before}
        n = len(self.lab.servers)
        own = [p for p, role in roles.items() if role in ("anycastd", "healthcheck")]
        return {
            "cpu": sum(cpu.values()) / n,
            "rss": sum(rss_mb(p) for p in before) / n,
            "own cpu": sum(cpu[p] for p in own) / n,
            "own rss": sum(rss_mb(p) for p in own) / n,
        }

    def evenness(self) -> dict[str, int]:
        result = self.lab.queries(SERVICE_V4.split("/")[0], 1000, rate=1000)
        answered: dict[str, int] = result["answered"]
        return {s.name: answered.get(s.name, 0) for s in self.lab.servers}


# tables -------------------------------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def summary(times: Times, give_up: float) -> tuple[str, str, float | None]:
    """(median, max, median in seconds or None) with trials that changed nothing shown as such."""
    done = [t for t in times if t is not None]
    if len(done) < len(times):
        never = f"never in {len(times) - len(done)}/{len(times)} (gave up at {give_up:g} s)"
        return never, "-" if not done else fmt(max(done)), None
    return fmt(statistics.median(done)), fmt(max(done)), statistics.median(done)


def question_table(title: str, goal: float, rows: list[tuple[Controller, Times]], give_up: float) -> list[str]:
    ours = summary(next(t for c, t in rows if c is ANYCASTD), give_up)[2]
    out = [
        f"**{title}** (goal for anycastd: <= {fmt(goal)})",
        "",
        "| controller | median | max | x anycastd |",
        "|---|---:|---:|---:|",
    ]
    for controller, times in rows:
        med, worst, value = summary(times, give_up)
        if controller is ANYCASTD:
            ratio = "1 (goal " + ("met" if value is not None and value <= goal else "**missed**") + ")"
        elif value is None or ours is None:
            ratio = "-"
        else:
            ratio = f"{value / ours:.1f}"
        out.append(f"| {controller.label} | {med} | {worst} | {ratio} |")
    return [*out, ""]


QUESTIONS = [
    ("killed", "1. Resolver killed (SIGKILL) -> path gone from the router's FIB", 0.25),
    ("frozen", "2. Resolver frozen (SIGSTOP) -> path gone", 1.0),
    ("back", "3. Resolver back (restarted) -> path back", 1.0),
    ("controller killed", "4. Controller killed (SIGKILL) -> path gone", 1.0),
    ("controller frozen", "5. Controller frozen (SIGSTOP) -> path gone", 3.0),
]


@dataclass
class Results:
    trials: int
    window: float
    give_up: float
    times: dict[str, list[tuple[Controller, Times]]] = field(default_factory=dict)
    losses: list[tuple[Controller, str, list[tuple[int, float]]]] = field(default_factory=list)
    costs: list[tuple[Controller, dict[str, float]]] = field(default_factory=list)
    spreads: list[tuple[Controller, dict[str, int]]] = field(default_factory=list)
    shipped: Times = field(default_factory=list)
    policy: str = ""


def collect(lab: BgpLab, r: Results) -> None:
    """Every question, for every controller in turn, in one lab."""
    for controller in CONTROLLERS:
        print(f"== {controller.label}", flush=True)
        with Running(lab, controller) as running:
            cases = running.cases()
            for key, _, _ in QUESTIONS:
                times = trial_times(lab, r.trials, cases[key], running.restore, give_up=r.give_up)
                r.times.setdefault(key, []).append((controller, times))
            for planned in (False, True):
                kind = "planned drain" if planned else "unplanned failure"
                outcomes = []
                for trial in range(r.trials):
                    outcomes.append(running.lost(lab.servers[trial % len(lab.servers)], planned))
                    print(f"  queries lost, {kind}: trial {trial + 1}/{r.trials}: {outcomes[-1][0]}", flush=True)
                r.losses.append((controller, kind, outcomes))
            print(f"  sampling CPU and memory for {r.window:g} s", flush=True)
            r.costs.append((controller, running.cost(r.window)))
            r.spreads.append((controller, running.evenness()))
    print(f"== {HC_AS_SHIPPED.label}", flush=True)
    with Running(lab, HC_AS_SHIPPED) as running:
        r.shipped = trial_times(lab, min(r.trials, 3), running.cases()["killed"], running.restore, r.give_up)
    r.policy = lab.lab.exec(lab.lab.router, "sysctl", "-n", "net.ipv4.fib_multipath_hash_policy").stdout.strip()


def losses_table(r: Results) -> list[str]:
    lines = [
        f"**6. Queries lost at {RATE} queries/s** when a resolver is killed (unplanned), and when the server "
        "is drained first and then its resolver killed (planned). A drain with anycastd is "
        "`anycastctl withdraw dns --wait`; with `exabgp healthcheck`, touching its --disable file and "
        "waiting one check interval and a second more (it gives no signal that the drain is done). "
        "Goal for anycastd: 0 lost in a planned drain.",
        "",
        "| controller | failure | lost: median | lost: max | drain took: median |",
        "|---|---|---:|---:|---:|",
    ]
    for controller, kind, outcomes in r.losses:
        lost = [n for n, _ in outcomes]
        took = statistics.median(w for _, w in outcomes)
        met = ""
        if controller is ANYCASTD and "drain" in kind:
            met = " (goal " + ("met" if max(lost) == 0 else "**missed**") + ")"
        lines.append(
            f"| {controller.label} | {kind} | {statistics.median(lost):.0f}{met} | {max(lost)} | "
            f"{fmt(took) if took else '-'} |"
        )
    return [*lines, ""]


def cost_and_spread_tables(r: Results) -> list[str]:
    lines = [
        f"**8. Cost per server** at the default probe rate, over {r.window:g} s (CPU in % of one core, "
        "dig's CPU counted with the checker's). Goal for anycastd itself: <= 1 % and <= 60 MB.",
        "",
        "| controller | checker CPU | checker RSS | with ExaBGP: CPU | with ExaBGP: RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for controller, cost in r.costs:
        lines.append(
            f"| {controller.label} | {cost['own cpu']:.2f} % | {cost['own rss']:.0f} MB | "
            f"{cost['cpu']:.2f} % | {cost['rss']:.0f} MB |"
        )
    names = list(r.spreads[0][1])
    lines += [
        "",
        f"**9. ECMP evenness**: 1000 queries from the client, each its own flow (new source port); "
        f"router `net.ipv4.fib_multipath_hash_policy = {r.policy}` (L4 hash).",
        "",
        "| controller | " + " | ".join(names) + " | max/min |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for controller, spread in r.spreads:
        ratio = max(spread.values()) / max(1, min(spread.values()))
        lines.append(f"| {controller.label} | " + " | ".join(str(v) for v in spread.values()) + f" | {ratio:.2f} |")
    return [*lines, ""]


def report(r: Results, command: str, elapsed: float) -> list[str]:
    d = DnsCheck.__dataclass_fields__
    settings = ", ".join(f"{k} {d[k].default}" for k in ("interval", "timeout", "rise", "fall", "fall_hard"))
    lines = [
        "## anycastd beside `exabgp healthcheck`",
        "",
        f"Command: `{command}` (as root; `make bench` runs it); the run took {elapsed / 60:.1f} min.",
        context(),
        f"Same lab, same run: FRR (frr/bgp/frr.conf, hold time 3 s), three servers, each controller on all three. "
        f"anycastd: check {settings}. `exabgp healthcheck` (ExaBGP's own, same ExaBGP) runs "
        f"`dig +time=1 +tries=1 @ADMIN {HEALTH_QNAME} TXT`; defaults are --interval 5 --fast-interval 1 "
        f"--rise 3 --fall 3 --timeout 5, fastest is `{FASTEST}`. Both get `--withdraw-on-down`: see the note "
        "below the tables. The controller is anycastd (which takes its ExaBGP down with it) or the "
        "healthcheck process (ExaBGP itself keeps running, as it does when its checker dies). "
        f"Each row is {r.trials} trials rotating over the servers; 'never' means the FIB did not change "
        f"within {r.give_up:g} s.",
        "",
    ]
    for key, title, goal in QUESTIONS:
        lines += question_table(title, goal, r.times[key], r.give_up)
    lines += losses_table(r) + cost_and_spread_tables(r)
    med, _, _ = summary(r.shipped, r.give_up)
    lines += [
        f"Note: without `--withdraw-on-down`, `exabgp healthcheck` does not withdraw a failed service: it "
        f"re-announces it with a worse MED (1000 instead of 100). With one AS per server, as here and in "
        f"frr/bgp/frr.conf, the router does not compare MEDs across neighbours, so the failed server stays "
        f"in the ECMP set. Measured, resolver killed -> path gone: {med}.",
    ]
    return lines


def main() -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trials", type=int, default=5)
        p.add_argument("--quick", action="store_true", help="1 trial each: a smoke run that writes nothing")
        p.add_argument("--give-up", type=float, default=15.0, help="seconds to wait for a FIB change")

    args = arguments(__doc__, "bench/compare.py", options)
    if args is None:
        return 1
    if args.quick:
        r = Results(trials=1, window=5.0, give_up=10.0)
        command = "python bench/compare.py --quick"
    else:
        r = Results(trials=args.trials, window=60.0, give_up=args.give_up)
        command = f"python bench/compare.py --trials {args.trials}"
    started = time.monotonic()
    with BgpLab() as lab:
        collect(lab, r)
    publish("bench/compare.py", report(r, command, time.monotonic() - started), write=not (args.no_write or args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
