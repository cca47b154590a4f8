#!/usr/bin/env python3
"""anycastd beside `exabgp healthcheck`, in the same lab and the same run.

The sidecar lab (FRR, eBGP, ECMP over three servers announcing
203.0.113.53/32 and 2001:db8::53/128) runs three controllers at once, one
per server:

- anycastd with its defaults;
- ExaBGP's own health checker (`python -m exabgp healthcheck`, shipped with
  ExaBGP) with its default options, and with its fastest ones
  (--interval 1 --fast-interval 1 --rise 1 --fall 1 --timeout 1), checking the
  resolver with dig.

Theory of operation
-------------------
Running the controllers side by side, rather than one after the other, puts
them under the same load at the same moment and spends each waiting period
once: a trial does the same thing to every server together (kill its
resolver, freeze its controller, ...) and times each server's path in the
router's kernel FIB separately, polled every 2 ms; a path that does not
change is waited for up to a give-up time. The controllers rotate over the
servers between trials (s1 runs BIND, s2 and s3 Unbound), so no controller
always gets the same resolver. Queries lost (question 6) are measured one
server at a time, since a lost query cannot say which server it went to.

Prints one table per question and writes them into docs/benchmarks.md.

    python bench/compare.py [--trials 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from report import arguments, context, cpu_percent, publish, rss_mb

from anycastd.config.checks import Check
from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.daemons import anycastd_key
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import HEALTH_QNAME, ROUTER_ASN, SERVICE_V4, SERVICE_V6, Server

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
RATE = 1000  # queries per second from the client, for question 6
LOSS = 5  # % of probe packets dropped, each way, for question 7
FLAP = 0.3  # seconds between a flapping resolver's changes, for question 7


@dataclass(frozen=True)
class Controller:
    label: str
    healthcheck: str | None  # None: anycastd; otherwise `exabgp healthcheck`'s options
    interval: float  # seconds between checks while nothing changes


ANYCASTD = Controller("anycastd, defaults", None, Check(ipaddress.ip_address("192.0.2.1")).interval)
HC_DEFAULTS = Controller("exabgp healthcheck, defaults", "--withdraw-on-down", 5.0)
HC_FASTEST = Controller("exabgp healthcheck, fastest", f"{FASTEST} --withdraw-on-down", 1.0)
HC_AS_SHIPPED = Controller("exabgp healthcheck, defaults without --withdraw-on-down", "", 5.0)
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
            # The reference router runs GTSM (ttl-security hops 1), which any ExaBGP must meet: send TTL 255.
            "    outgoing-ttl 255;",
            f"    family {{ {family}; }}",
            "    api { processes [ healthcheck ]; }",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Moves:
    """What one server's path did in the router's FIB over a window (question 7)."""

    withdrawals: int
    changes: int  # withdrawals and announcements
    busiest: int  # the most changes within any 10 s


@dataclass(frozen=True)
class Loss:
    """One run of question 6: queries lost, how long the drain took, whether the path outlived the load."""

    lost: int
    drain: float
    outlived: bool


class Deployment:
    """The lab with one controller per server: assign() changes who runs where, restore() heals everything."""

    def __init__(self, lab: BgpLab) -> None:
        self.lab = lab
        self.on = {s.name: ANYCASTD for s in lab.servers}  # the lab starts anycastd everywhere

    def controller(self, s: Server) -> Controller:
        return self.on[s.name]

    def assign(self, mapping: dict[str, Controller]) -> None:
        changed = [s for s in self.lab.servers if self.on[s.name] != mapping[s.name]]
        for s in changed:
            self.stop(s)
            self.on[s.name] = mapping[s.name]
            self.start(s)
        self.restore()
        print("   " + ", ".join(f"{name}: {c.label}" for name, c in self.on.items()), flush=True)

    # the controllers' processes -----------------------------------------------------------------------------

    def key(self, s: Server) -> str:
        return f"exabgp-healthcheck-{s.name}"

    def failure_action(self, c: Controller) -> str:
        """anycastd's failure action: its default, withdraw, like for like with `--withdraw-on-down` (the
        lab's own configuration keeps a failing path tagged GRACEFUL_SHUTDOWN instead, which would leave
        anycastd's path the last one standing when every server fails at once)."""
        return "withdraw"

    def anycastd_config(self, s: Server) -> str:
        return daemons.anycastd_config(self.lab.lab, s, failure_action=self.failure_action(self.controller(s)))

    def start(self, s: Server) -> None:
        c = self.controller(s)
        if c.healthcheck is None:
            self.lab.start_anycastd(s, self.anycastd_config(s))
            return
        lab = self.lab.lab
        for prefix in (SERVICE_V4, SERVICE_V6):  # what --no-ip-setup expects to find
            lab.exec(lab.ns(s.name), "ip", "addr", "replace", prefix, "dev", "lo")
        sdir = lab.workdir / s.name
        conf = sdir / "exabgp-healthcheck.conf"
        check = sdir / "check-dns"
        check.write_text(check_script(s))
        check.chmod(0o755)
        conf.write_text(healthcheck_config(s, check, self.disable_file(s), c.healthcheck))
        argv = ["env", *(f"{k}={v}" for k, v in EXABGP_ENV.items()), sys.executable, "-m", "exabgp", str(conf)]
        lab.spawn(self.key(s), lab.ns(s.name), argv, sdir / "exabgp-healthcheck.log")

    def stop(self, s: Server) -> None:
        if self.controller(s).healthcheck is None:
            self.lab.lab.stop(anycastd_key(s), signal.SIGTERM)  # it takes its ExaBGP down with it
            return
        leftovers = list(self.roles(s))
        self.lab.lab.stop(self.key(s), signal.SIGKILL)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def disable_file(self, s: Server) -> Path:
        return self.lab.lab.workdir / s.name / "disable"

    def roles(self, s: Server) -> dict[int, str]:
        """The controller's processes on ``s`` by role: anycastd, its ExaBGP and helper; or ExaBGP and the checker."""
        roles = {pid: self._role(argv) for pid, argv in self.lab.lab.commands(s.name).items()}
        return {pid: role for pid, role in roles.items() if role}

    @staticmethod
    def _role(argv: list[bytes]) -> str:
        if b"healthcheck" in argv:
            return "healthcheck"
        if b"exabgp" in argv or b"anycastd.announce.exabgp_run" in argv:
            return "exabgp"
        if any(a.endswith(b"exabgp_helper.py") for a in argv):
            return "helper"
        if b"anycastd" in argv and b"run" in argv:
            return "anycastd"
        return ""

    def checker_pids(self, s: Server) -> list[int]:
        role = "anycastd" if self.controller(s).healthcheck is None else "healthcheck"
        return [pid for pid, r in self.roles(s).items() if r == role]

    def signal_checker(self, s: Server, sig: int) -> None:
        for pid in self.checker_pids(s):
            os.kill(pid, sig)

    def kill_controller(self, s: Server) -> None:
        self.signal_checker(s, signal.SIGKILL)

    def restore(self) -> None:
        """Every resolver and controller running and thawed, nothing drained, every path in the FIB."""
        for s in self.lab.servers:
            if self.controller(s).healthcheck is None:
                self.revive_anycastd(s)
                continue
            self.lab.revive_resolver(s)
            self.disable_file(s).unlink(missing_ok=True)
            proc = self.lab.lab.processes.get(self.key(s))
            if proc is None or proc.poll() is not None or not self.checker_pids(s):
                self.stop(s)  # ExaBGP did not bring its checker back: start over
                self.start(s)
            self.signal_checker(s, signal.SIGCONT)
        for s in self.lab.servers:
            if self.controller(s).healthcheck is None:
                self.lab.undrain(s)
        self.lab.wait_paths(len(self.lab.servers), timeout=90)

    def revive_anycastd(self, s: Server) -> None:
        """anycastd on ``s`` running with this deployment's configuration and thawed; its resolver too."""
        config, _, _ = daemons.anycastd_paths(self.lab.lab, s)
        if self.lab.anycastd_running(s) and config.read_text() != self.anycastd_config(s):
            self.lab.lab.stop(anycastd_key(s), signal.SIGKILL)
        if self.lab.anycastd_running(s):
            self.lab.signal_anycastd(s, signal.SIGCONT)
        else:
            self.start(s)
        self.lab.revive_resolver(s)

    # questions 1 to 5: the same event on every server at once --------------------------------------------------

    def race(self, action: Callable[[Server], None], present: bool, give_up: float) -> dict[str, float | None]:
        """Do ``action`` to every server, then time each one's path into (out of) the FIB; None past ``give_up``."""
        time.sleep(random.uniform(0.2, 0.6))  # start at a random phase of the probe schedules
        started = {}
        for s in self.lab.servers:
            started[s.name] = time.monotonic()
            action(s)
        times: dict[str, float | None] = dict.fromkeys(started)
        deadline = time.monotonic() + give_up
        while None in times.values() and time.monotonic() < deadline:
            paths = self.lab.server_paths()
            now = time.monotonic()
            for name, took in times.items():
                if took is None and (name in paths) == present:
                    times[name] = now - started[name]
            time.sleep(0.002)
        return times

    def trial(self, give_up: float) -> dict[str, dict[str, float | None]]:
        """One trial of questions 1 to 5, every server at once: question -> server -> seconds (None: no change)."""
        lab = self.lab
        out = {"killed": self.race(lab.kill_resolver, False, give_up)}
        back = self.race(lambda s: lab.start_resolver(s, wait=False), True, give_up)
        out["back"] = {name: t if out["killed"][name] is not None else None for name, t in back.items()}
        self.restore()
        out["frozen"] = self.race(lambda s: lab.signal_resolver(s, signal.SIGSTOP), False, give_up)
        self.restore()
        out["controller killed"] = self.race(self.kill_controller, False, give_up)
        self.restore()
        out["controller frozen"] = self.race(lambda s: self.signal_checker(s, signal.SIGSTOP), False, give_up)
        self.restore()
        return out

    # question 6: one server at a time ------------------------------------------------------------------------

    def lost(self, s: Server, planned: bool) -> Loss:
        """Queries lost at RATE/s when ``s``'s resolver is killed, unannounced or after a drain.

        A drain is what an operator does with each tool: `anycastctl withdraw dns --wait`, which returns
        once no query arrives; or `touch` the --disable file of `exabgp healthcheck`, which gives no
        signal, and wait one check interval and a second more before stopping the resolver."""
        c = self.controller(s)
        seconds = 3.0 + 2 * c.interval  # the failure, its detection (at most two intervals), and a margin
        load = self.lab.client(SERVICE_V4.split("/")[0], int(RATE * (seconds + 1.0)), RATE)
        time.sleep(1.0)
        waited = 0.0
        if planned:
            t0 = time.monotonic()
            if c.healthcheck is None:
                reply = self.lab.anycastctl(s, "withdraw", "dns", "--reason", "bench", "--wait")
                if reply.returncode != 0:
                    raise RuntimeError(f"anycastctl withdraw failed: {reply.stderr}")
            else:
                self.disable_file(s).touch()
                time.sleep(c.interval + 1.0)
            waited = time.monotonic() - t0
        self.lab.kill_resolver(s)
        result = self.lab.client_result(load, timeout=seconds + 60)
        outlived = s.name in self.lab.server_paths()
        self.restore()
        return Loss(int(result["lost"]), waited, outlived)

    # question 7: every server at once, over a window -----------------------------------------------------------

    @contextlib.contextmanager
    def watching(self) -> Iterator[FibWatch]:
        with FibWatch(self.lab.lab.router, SERVICE_V4, period=0.01) as watch:
            yield watch

    def changes(self, watch: FibWatch) -> dict[str, Moves]:
        """Per server, what its path did in what ``watch`` saw."""
        out = {}
        for s in self.lab.servers:
            moves = [
                (at, now)
                for (_, was), (at, now) in itertools.pairwise((at, s.v4 in hops) for at, hops in watch.changes)
                if was != now
            ]
            stamps = [at for at, _ in moves]
            busiest = max((sum(1 for u in stamps if at <= u < at + 10) for at in stamps), default=0)
            out[s.name] = Moves(sum(1 for _, now in moves if not now), len(moves), busiest)
        return out

    def probe_loss(self, seconds: float) -> dict[str, Moves]:
        """Drop LOSS % of the probes' packets, queries and answers alike, on every server for ``seconds``.

        The rule sits on the input hook of each server's lo, where its probes of its own resolver pass
        (a drop on the output hook would fail the send at once, which no lost packet does)."""
        try:
            with self.lab.probe_loss(LOSS), self.watching() as watch:
                for minute in range(int(seconds // 60)):
                    time.sleep(60)
                    withdrawals = {name: m.withdrawals for name, m in self.changes(watch).items()}
                    print(f"   {minute + 1} of {seconds / 60:g} min, withdrawals: {withdrawals}", flush=True)
                time.sleep(seconds % 60)
            return self.changes(watch)
        finally:
            self.restore()

    def flapping(self, kind: str, seconds: float) -> dict[str, Moves]:
        """Every resolver goes away and comes back every FLAP s for ``seconds``: route changes per server.

        "stalls": SIGSTOP and SIGCONT, a resolver that hangs (its late answers still arrive).
        "refusals": an nftables reject on its port, which a probe sees as connection refused, as when the
        resolver has died; one `nft -i` per server applies each change in about a millisecond."""
        lab = self.lab.lab
        shells: list[subprocess.Popen[str]] = []
        table = "add table inet acd_flap; add chain inet acd_flap in { type filter hook input priority 0; }"
        on = 'add rule inet acd_flap in iifname "lo" udp dport 53 reject\n'
        off = "flush chain inet acd_flap in\n"
        try:
            if kind == "refusals":
                for s in self.lab.servers:
                    lab.exec(lab.ns(s.name), "nft", table)
                    argv = ["ip", "netns", "exec", lab.ns(s.name), "nft", "-i"]
                    shells.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True))

            def toggle(down: bool) -> None:
                if kind == "stalls":
                    for s in self.lab.servers:
                        self.lab.signal_resolver(s, signal.SIGSTOP if down else signal.SIGCONT)
                for shell in shells:
                    assert shell.stdin is not None
                    shell.stdin.write(on if down else off)
                    shell.stdin.flush()

            with self.watching() as watch:
                start = time.monotonic()
                tick = 0
                while time.monotonic() - start < seconds:
                    toggle(down=tick % 2 == 0)
                    tick += 1
                    time.sleep(max(0.0, start + tick * FLAP - time.monotonic()))
                toggle(down=False)
            return self.changes(watch)
        finally:
            for shell in shells:
                with contextlib.suppress(OSError):
                    assert shell.stdin is not None
                    shell.stdin.close()
                shell.wait(timeout=10)
            for s in self.lab.servers:
                lab.exec(lab.ns(s.name), "nft", "delete table inet acd_flap", check=False)
            self.restore()

    # questions 8 and 9 -----------------------------------------------------------------------------------------

    def cost(self, seconds: float, slices: int) -> dict[Controller, list[dict[str, float]]]:
        """CPU (% of one core) and RSS (MB) of each controller's processes on its server, the checker alone
        too, in ``slices`` consecutive windows over ``seconds``."""
        time.sleep(3)
        roles = {s.name: self.roles(s) for s in self.lab.servers}
        out: dict[Controller, list[dict[str, float]]] = {self.controller(s): [] for s in self.lab.servers}
        for _ in range(slices):
            cpu = cpu_percent([p for r in roles.values() for p in r], seconds / slices, children=True)
            for s in self.lab.servers:
                own = [p for p, role in roles[s.name].items() if role in ("anycastd", "healthcheck")]
                out[self.controller(s)].append(
                    {
                        "cpu": sum(cpu[p] for p in roles[s.name]),
                        "rss": sum(rss_mb(p) for p in roles[s.name]),
                        "own cpu": sum(cpu[p] for p in own),
                        "own rss": sum(rss_mb(p) for p in own),
                    }
                )
        return out

    def evenness(self) -> dict[str, int]:
        result = self.lab.queries(SERVICE_V4.split("/")[0], 1000, rate=1000)
        answered: dict[str, int] = result["answered"]
        return {s.name: answered.get(s.name, 0) for s in self.lab.servers}


# the run --------------------------------------------------------------------------------------------------------


QUESTIONS = [
    ("killed", "1. Resolver killed (SIGKILL) -> path gone from the router's FIB", 0.25),
    ("frozen", "2. Resolver frozen (SIGSTOP) -> path gone", 1.0),
    ("back", "3. Resolver back (restarted) -> path back", 1.0),
    ("controller killed", "4. Controller killed (SIGKILL) -> path gone", 1.0),
    ("controller frozen", "5. Controller frozen (SIGSTOP) -> path gone", 3.0),
]
KINDS = ("unplanned failure", "planned drain")


@dataclass
class Results:
    trials: int
    window: float  # seconds of CPU sampling (question 8)
    give_up: float
    loss_window: float  # seconds of probe loss (question 7)
    flap_window: float  # seconds of flapping, per kind (question 7)
    times: dict[str, dict[Controller, Times]] = field(default_factory=dict)
    servers: dict[Controller, list[str]] = field(default_factory=dict)  # where each trial ran it
    losses: dict[tuple[Controller, str], list[Loss]] = field(default_factory=dict)
    costs: dict[Controller, list[dict[str, float]]] = field(default_factory=dict)
    spread: dict[str, int] = field(default_factory=dict)
    placed: dict[str, Controller] = field(default_factory=dict)  # who ran where for questions 7 to 9
    withdrawals: dict[str, Moves] = field(default_factory=dict)
    flaps: dict[str, dict[str, Moves]] = field(default_factory=dict)
    shipped: Times = field(default_factory=list)
    policy: str = ""


def rotation(lab: BgpLab, trial: int) -> dict[str, Controller]:
    """Trial t runs controller c on server (c + t) mod 3."""
    n = len(lab.servers)
    return {lab.servers[(c + trial) % n].name: controller for c, controller in enumerate(CONTROLLERS)}


def collect(lab: BgpLab, r: Results) -> None:
    dep = Deployment(lab)
    n = len(lab.servers)
    order = sorted(range(r.trials), key=lambda t: (t % n, t))  # one switch of controllers per rotation
    for done, t in enumerate(order, 1):
        print(f"== trial {done}/{r.trials}", flush=True)
        dep.assign(rotation(lab, t))
        outcome = dep.trial(r.give_up)
        for key, by_server in outcome.items():
            for s in lab.servers:
                r.times.setdefault(key, {}).setdefault(dep.controller(s), []).append(by_server[s.name])
        print("   " + "; ".join(f"{k}: {fmt_row(v)}" for k, v in outcome.items()), flush=True)
        for s in lab.servers:
            c = dep.controller(s)
            r.servers.setdefault(c, []).append(s.name)
            for kind in KINDS:
                loss = dep.lost(s, planned=kind == "planned drain")
                r.losses.setdefault((c, kind), []).append(loss)
                print(f"   {c.label} on {s.name}, {kind}: {loss.lost} lost", flush=True)
    r.placed = dict(dep.on)
    print(f"== CPU and memory for {r.window:g} s", flush=True)
    r.costs = dep.cost(r.window, slices=max(r.trials, 1))
    r.spread = dep.evenness()
    print(f"== {LOSS} % probe loss for {r.loss_window / 60:g} min", flush=True)
    r.withdrawals = dep.probe_loss(r.loss_window)
    for kind in ("refusals", "stalls"):
        print(f"== flapping by {kind} every {FLAP * 1000:.0f} ms for {r.flap_window:g} s", flush=True)
        r.flaps[kind] = dep.flapping(kind, r.flap_window)
    r.policy = lab.lab.exec(lab.lab.router, "sysctl", "-n", "net.ipv4.fib_multipath_hash_policy").stdout.strip()
    if r.trials > 1:
        print(f"== {HC_AS_SHIPPED.label}", flush=True)
        dep.assign({s.name: HC_AS_SHIPPED for s in lab.servers})
        r.shipped = list(dep.race(lab.kill_resolver, False, r.give_up).values())
        dep.restore()


# tables -------------------------------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_row(by_server: dict[str, float | None]) -> str:
    return " ".join(f"{name} {'-' if t is None else fmt(t)}" for name, t in by_server.items())


def summary(times: Times, give_up: float) -> tuple[str, str, float | None]:
    """(median, max, median in seconds or None) with trials that changed nothing shown as such."""
    done = [t for t in times if t is not None]
    if len(done) < len(times):
        never = f"never in {len(times) - len(done)}/{len(times)} (gave up at {give_up:g} s)"
        return never, "-" if not done else fmt(max(done)), None
    return fmt(statistics.median(done)), fmt(max(done)), statistics.median(done)


def question_table(title: str, goal: float, rows: dict[Controller, Times], give_up: float) -> list[str]:
    ours = summary(rows[ANYCASTD], give_up)[2]
    out = [
        f"**{title}** (goal for anycastd: <= {fmt(goal)})",
        "",
        "| controller | median | max | x anycastd |",
        "|---|---:|---:|---:|",
    ]
    for controller in CONTROLLERS:
        med, worst, value = summary(rows[controller], give_up)
        if controller is ANYCASTD:
            times = "1 (goal " + ("met" if value is not None and value <= goal else "**missed**") + ")"
        elif value is None or ours is None:
            times = "-"
        else:
            times = f"{value / ours:.1f}"
        out.append(f"| {controller.label} | {med} | {worst} | {times} |")
    return [*out, ""]


def ratio(value: float, ours: float) -> str:
    """``value`` as a multiple of anycastd's; '-' where anycastd's is 0."""
    return f"{value / ours:.1f}" if ours else "-"


def losses_table(r: Results) -> list[str]:
    lines = [
        f"**6. Queries lost at {RATE} queries/s**, one server at a time, when its resolver is killed "
        "(unplanned), and when the server is drained first and then its resolver killed (planned). A drain "
        "with anycastd is `anycastctl withdraw dns --wait`; with `exabgp healthcheck`, touching its --disable "
        "file and waiting one check interval and a second more (it gives no signal that the drain is done). "
        "The load runs on for 2 + 2 check intervals after the kill. Goal for anycastd: 0 lost in a planned drain.",
        "",
        "| controller | failure | lost: median | lost: max | x anycastd | drain took: median |",
        "|---|---|---:|---:|---:|---:|",
    ]
    outlived = 0
    for controller in CONTROLLERS:
        for kind in KINDS:
            runs = r.losses[(controller, kind)]
            lost = [x.lost for x in runs]
            ours = statistics.median(x.lost for x in r.losses[(ANYCASTD, kind)])
            outlived += sum(x.outlived for x in runs)
            took = statistics.median(x.drain for x in runs)
            times = "1" if controller is ANYCASTD else ratio(statistics.median(lost), ours)
            if controller is ANYCASTD and kind == "planned drain":
                times = "goal " + ("met" if max(lost) == 0 else "**missed**")
            lines.append(
                f"| {controller.label} | {kind} | {statistics.median(lost):.0f} | {max(lost)} | {times} | "
                f"{fmt(took) if took else '-'} |"
            )
    if outlived:
        lines += ["", f"In {outlived} runs the path was still in the FIB when the load ended: those are lower bounds."]
    return [*lines, ""]


def flap_tables(r: Results) -> list[str]:
    minutes = r.flap_window / 60
    lines = [
        f"**7. False withdrawals and flapping.** First {r.loss_window / 60:g} min with {LOSS} % of probe packets "
        f"dropped, queries and answers alike (nftables `numgen random mod 100 < {LOSS} drop` on the input hook of "
        f"each server's lo), every resolver healthy. Then {r.flap_window:g} s of each resolver flapping every "
        f"{FLAP * 1000:.0f} ms, two ways: refusals (an nftables reject on port 53, which a probe sees as "
        "connection refused, as from a dead resolver) and stalls (SIGSTOP and SIGCONT: a hung resolver whose "
        "late answers still arrive). Route changes are the server's path entering or leaving the router's FIB "
        "(polled every 10 ms); 'most in 10 s' is the busiest 10 s of the window. Goals for anycastd: "
        "0 false withdrawals, <= 1 route change per 10 s. Counts, not ratios: a ratio to 0 says nothing.",
        "",
        "| controller | server | false withdrawals (5 % loss) | refusals: route changes/min | "
        "refusals: most in 10 s | stalls: route changes/min | stalls: most in 10 s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for controller in CONTROLLERS:
        name = next(n for n, c in r.placed.items() if c == controller)
        withdrawals = r.withdrawals[name].withdrawals
        cells = [str(withdrawals)]
        for kind in ("refusals", "stalls"):
            moves = r.flaps[kind][name]
            cells += [f"{moves.changes / minutes:.1f}", str(moves.busiest)]
        if controller is ANYCASTD:
            cells[0] += " (goal " + ("met" if withdrawals == 0 else "**missed**") + ")"
            for i in (2, 4):
                cells[i] += " (goal " + ("met" if int(cells[i]) <= 1 else "**missed**") + ")"
        lines.append(f"| {controller.label} | {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def cost_and_spread_tables(r: Results) -> list[str]:
    slices = len(r.costs[ANYCASTD])
    lines = [
        f"**8. Cost per server** at the default probe rate, the three controllers side by side, over "
        f"{slices} consecutive windows of {r.window / slices:g} s (CPU in % of one core, dig's CPU counted with "
        "the checker's; RSS at the end). Goal for anycastd itself: <= 1 % and <= 60 MB.",
        "",
        "| controller | checker CPU: median | max | checker RSS | with ExaBGP CPU: median | max | "
        "with ExaBGP RSS | x anycastd (CPU with ExaBGP) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = statistics.median(c["cpu"] for c in r.costs[ANYCASTD])
    for controller in CONTROLLERS:
        windows = r.costs[controller]
        own = [c["own cpu"] for c in windows]
        cpu = [c["cpu"] for c in windows]
        own_rss, rss = windows[-1]["own rss"], windows[-1]["rss"]
        times = ratio(statistics.median(cpu), ours)
        if controller is ANYCASTD:
            met = max(own) <= 1 and own_rss <= 60
            times = "1 (goal " + ("met" if met else "**missed**") + ")"
        lines.append(
            f"| {controller.label} | {statistics.median(own):.2f} % | {max(own):.2f} % | {own_rss:.0f} MB | "
            f"{statistics.median(cpu):.2f} % | {max(cpu):.2f} % | {rss:.0f} MB | {times} |"
        )
    names = list(r.spread)
    spread = max(r.spread.values()) / max(1, min(r.spread.values()))
    lines += [
        "",
        f"**9. ECMP evenness**: 1000 queries from the client, each its own flow (new source port); "
        f"router `net.ipv4.fib_multipath_hash_policy = {r.policy}` (L4 hash: addresses, protocol and ports). "
        "The hash is the router's, whoever announces the paths.",
        "",
        "| " + " | ".join(f"{n} ({r.placed[n].label})" for n in names) + " | max/min |",
        "|" + "---:|" * (len(names) + 1),
        "| " + " | ".join(str(r.spread[n]) for n in names) + f" | {spread:.2f} |",
    ]
    return [*lines, ""]


def report(r: Results, command: str, elapsed: float) -> list[str]:
    d = Check.__dataclass_fields__
    settings = ", ".join(f"{k} {d[k].default}" for k in ("interval", "timeout", "rise", "fall", "fall_hard"))
    placements = "; ".join(f"{c.label}: {', '.join(r.servers[c])}" for c in CONTROLLERS)
    lines = [
        "## anycastd beside `exabgp healthcheck`",
        "",
        f"Command: `{command}` (as root; `make bench` runs it); the run took {elapsed / 60:.1f} min.",
        context(),
        f"Same lab, same run, side by side: FRR (frr/bgp/frr.conf, hold time 3 s) and three servers, each "
        f"running one of the controllers, which rotate over the servers between trials (s1 runs BIND, s2 and "
        f"s3 Unbound; by trial: {placements}). Each trial of questions 1 to 5 does the same thing to every "
        f"server at once and times each server's path in the router's FIB (polled every 2 ms). "
        f"anycastd: check {settings}, and its default `failure_action: withdraw`. "
        "`exabgp healthcheck` (ExaBGP's own, same ExaBGP) runs "
        f"`dig +time=1 +tries=1 @ADMIN {HEALTH_QNAME} TXT`; defaults are --interval 5 --fast-interval 1 "
        f"--rise 3 --fall 3 --timeout 5, fastest is `{FASTEST}`. Both get `--withdraw-on-down`: see the note "
        "below the tables. The controller is anycastd (which takes its ExaBGP down with it) or the "
        "healthcheck process (ExaBGP itself keeps running, as it does when its checker dies). "
        f"{r.trials} trials; 'never' means the FIB did not change within {r.give_up:g} s.",
        "",
    ]
    for key, title, goal in QUESTIONS:
        lines += question_table(title, goal, r.times[key], r.give_up)
    lines += losses_table(r) + flap_tables(r) + cost_and_spread_tables(r)
    if r.shipped:
        med, _, _ = summary(r.shipped, r.give_up)
        lines += [
            f"Note: without `--withdraw-on-down`, `exabgp healthcheck` does not withdraw a failed service: it "
            f"re-announces it with a worse MED (1000 instead of 100). With one AS per server, as here and in "
            f"frr/bgp/frr.conf, the router does not compare MEDs across neighbours, so the failed server stays "
            f"in the ECMP set. Measured on all three servers at once, resolver killed -> path gone: {med}.",
        ]
    return lines


def main() -> int:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trials", type=int, default=5)
        p.add_argument("--quick", action="store_true", help="1 trial, short windows: a smoke run that writes nothing")
        p.add_argument("--give-up", type=float, default=10.0, help="seconds to wait for a FIB change")
        p.add_argument("--loss-minutes", type=float, default=10.0, help="minutes of 5 %% probe loss (question 7)")

    args = arguments(__doc__, "bench/compare.py", options)
    if args is None:
        return 1
    if args.quick:
        r = Results(trials=1, window=5.0, give_up=args.give_up, loss_window=30.0, flap_window=10.0)
        command = "python bench/compare.py --quick"
    else:
        loss = args.loss_minutes * 60
        r = Results(trials=args.trials, window=60.0, give_up=args.give_up, loss_window=loss, flap_window=60.0)
        command = f"python bench/compare.py --trials {args.trials}" + (
            f" --loss-minutes {args.loss_minutes:g}" if args.loss_minutes != 10.0 else ""
        )
    started = time.monotonic()
    with BgpLab() as lab:
        collect(lab, r)
    publish("bench/compare.py", report(r, command, time.monotonic() - started), write=not (args.no_write or args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
