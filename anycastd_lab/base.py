"""What every lab variant shares: the router's FIB, the resolvers, the client.

``BgpLab`` (anycastd beside each resolver, BGP to FRR) and ``StaticLab``
(`anycastd router` on the router, static routes in FRR) build on this, so
tests, benchmarks and the demo measure both variants the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from anycastd_lab import clab, daemons
from anycastd_lab.fib import Fib
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Lab, Server, run, wait_until


class DnsLab:
    #: the containerlab topology file this variant's lab is built from
    TOPOLOGY = clab.BGP_TOPOLOGY
    #: FRR's daemons on the router, in start order
    FRR_DAEMONS: tuple[str, ...] = ("zebra", "bgpd")
    #: seconds for every path to reach the router's FIB once the daemons are started
    READY_TIMEOUT = 60.0

    def __init__(self, keep_dir: bool = False) -> None:
        self.lab = Lab(self.TOPOLOGY, keep_dir=keep_dir)
        self.fib: Fib | None = None
        self.sick: set[str] = set()  # servers whose resolver answers a bad health record (set_health_record)

    @property
    def servers(self) -> list[Server]:
        return self.lab.server_list

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.fib is not None:
            self.fib.close()
            self.fib = None
        self.lab.__exit__(kind, exc, tb)

    def __enter__(self) -> Self:
        self.lab.__enter__()
        try:
            self.start_daemons()
            self.fib = Fib(self.lab.router)
            self.wait_paths(len(self.servers), timeout=self.READY_TIMEOUT)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def start_daemons(self) -> None:
        """The variant's daemons on the router and the servers; the lab is built."""
        raise NotImplementedError

    def restore(self) -> None:
        """Every daemon running, nothing drained, every path in the FIB: each test starts from a healthy lab."""
        raise NotImplementedError

    # what the router holds ------------------------------------------------

    def paths(self, prefix: str = SERVICE_V4) -> frozenset[str]:
        assert self.fib is not None
        return self.fib.nexthops(prefix)

    def server_paths(self, prefix: str = SERVICE_V4) -> frozenset[str]:
        """The names of the servers the router forwards ``prefix`` to."""
        hops = self.paths(prefix)
        return frozenset(s.name for s in self.servers if s.v4 in hops or s.v6 in hops)

    def wait_paths(self, count: int, timeout: float = 10.0, both_families: bool = True) -> float:
        """Wait until the FIB holds ``count`` paths; return how long it took (polled every 2 ms)."""
        started = time.monotonic()
        prefixes = (SERVICE_V4, SERVICE_V6) if both_families else (SERVICE_V4,)
        try:
            wait_until(
                lambda: all(len(self.paths(p)) == count for p in prefixes),
                timeout,
                interval=0.002,
                what=f"{count} paths in the router's FIB",
            )
        except TimeoutError as exc:
            held = "; ".join(f"{p}: {sorted(self.paths(p))}" for p in prefixes)
            raise TimeoutError(f"{exc} (it holds {held}){self.explain()}") from None
        return time.monotonic() - started

    def explain(self) -> str:
        """What the router's control plane says, for a failed wait's message (a variant adds its sessions)."""
        return ""

    def wait_server(self, server: Server, present: bool, timeout: float = 10.0) -> float:
        """Wait until ``server``'s path is (not) in the FIB; seconds waited."""
        started = time.monotonic()
        wait_until(
            lambda: (server.name in self.server_paths()) == present,
            timeout,
            interval=0.002,
            what=f"{server.name}'s path {'appearing in' if present else 'leaving'} the router's FIB",
        )
        return time.monotonic() - started

    def zebra_paths(self, prefix: str = SERVICE_V4) -> frozenset[str]:
        """The nexthops zebra says it installed in the kernel for ``prefix`` (its selected route's ``fib`` ones)."""
        family = "ip" if ":" not in prefix else "ipv6"
        out = json.loads(self.vtysh(f"show {family} route {prefix} json") or "{}")
        return frozenset(
            hop["ip"]
            for route in out.get(prefix, [])
            if route.get("selected") and route.get("installed")
            for hop in route.get("nexthops", [])
            if hop.get("fib") and hop.get("ip")
        )

    def wait_zebra_agrees(self, timeout: float = 3.0) -> None:
        """Wait until zebra's claim equals the kernel's FIB for both service prefixes."""
        wait_until(
            lambda: all(self.zebra_paths(p) == self.paths(p) for p in (SERVICE_V4, SERVICE_V6)),
            timeout,
            what=(
                f"zebra agreeing with the kernel (zebra {sorted(self.zebra_paths())}, kernel {sorted(self.paths())};"
                f" v6 zebra {sorted(self.zebra_paths(SERVICE_V6))}, kernel {sorted(self.paths(SERVICE_V6))})"
            ),
        )

    # the router's own failures ----------------------------------------------

    def frr_config(self) -> str:
        raise NotImplementedError

    def frr_pid(self, daemon: str) -> int | None:
        try:
            pid = int((self.lab.workdir / "router" / f"{daemon}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_running(pid) else None

    def stop_frr(self, daemon: str, sig: int = signal.SIGKILL) -> None:
        """Signal one of FRR's daemons; for SIGKILL and SIGTERM, wait until it is gone."""
        pid = self.frr_pid(daemon)
        assert pid is not None, f"{daemon} is not running"
        os.kill(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            wait_until(lambda: not process_running(pid), 10, what=f"{daemon} exiting")

    def stop_all_frr(self, zebra_crash: bool = False) -> None:
        """Every FRR daemon stopped, as a reboot does (SIGTERM, last started first); with ``zebra_crash``,
        zebra is SIGKILLed first, so the kernel keeps its routes, and then the others are stopped."""
        if zebra_crash:
            self.stop_frr("zebra", signal.SIGKILL)
        for daemon in reversed(self.FRR_DAEMONS):
            if self.frr_pid(daemon) is not None:
                self.stop_frr(daemon, signal.SIGTERM)

    def start_frr(self, *names: str) -> None:
        daemons.start_frr(self.lab, self.frr_config(), names)

    def ensure_frr(self) -> None:
        """Start whichever of FRR's daemons is not running (zebra first), thaw the others."""
        for daemon in self.FRR_DAEMONS:
            pid = self.frr_pid(daemon)
            if pid is None:
                self.start_frr(daemon)
            else:
                os.kill(pid, signal.SIGCONT)

    def router_link(self, server: Server) -> str:
        """The router's end of the link to ``server``."""
        return self.lab.topology.uplink(server.name)[1].interface

    def set_link(self, server: Server, up: bool) -> None:
        self.lab.exec(self.lab.router, "ip", "link", "set", self.router_link(server), "up" if up else "down")

    def flap_link(self, server: Server, gone_within: float, back_within: float) -> tuple[float, float]:
        """Take the router's link to ``server`` down, then up: seconds until its path left, and until every
        path was back; zebra must agree with the kernel at both ends."""
        self.set_link(server, False)
        gone = self.wait_server(server, present=False, timeout=gone_within)
        self.wait_zebra_agrees()
        self.set_link(server, True)
        back = self.wait_paths(len(self.servers), timeout=back_within)
        self.wait_zebra_agrees()
        return gone, back

    # a whole host's failures ---------------------------------------------------

    def blackhole(self, server: Server, on: bool = True) -> None:
        """Drop every frame ``server`` sends, at the router's port, with no change of carrier: what a power
        cut or a kernel panic looks like from the router (an nftables netdev ingress chain; no netem here)."""
        ns, table = self.lab.router, f"acd_blackhole_{server.name}"
        if on:
            device = self.router_link(server)
            chain = f"{{ type filter hook ingress device {device} priority -500; }}"
            self.lab.exec(ns, "nft", f"add table netdev {table}; add chain netdev {table} in {chain}; "
                          f"add rule netdev {table} in drop")  # fmt: skip
        else:
            self.lab.exec(ns, "nft", f"delete table netdev {table}", check=False)

    def freeze_host(self, server: Server, sig: int = signal.SIGSTOP) -> None:
        """SIGSTOP every process on ``server`` (SIGCONT with ``sig``): a host frozen under memory pressure,
        whose kernel still answers TCP and ARP while nothing in user space runs."""
        for pid in self.lab.commands(server.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def thaw_host(self, server: Server) -> None:
        self.freeze_host(server, signal.SIGCONT)

    def links_up(self) -> None:
        for s in self.servers:
            self.set_link(s, True)

    def vtysh(self, command: str) -> str:
        return daemons.vtysh(self.lab, command)

    def vtysh_config(self, lines: str) -> None:
        """Apply configuration lines on the router, as an operator at the vtysh prompt would."""
        argv = ["vtysh", "--vty_socket", str(self.lab.workdir / "router"), "-c", "configure terminal"]
        for line in lines.splitlines():
            argv += ["-c", line]
        run(*argv)

    # resolvers ------------------------------------------------------------

    def restart_resolver(self, server: Server, config: str | None = None, wait: bool = False) -> None:
        """Kill ``server``'s resolver and start it again, with ``config`` (its own text) instead of the lab's."""
        self.kill_resolver(server)
        self.sick.discard(server.name)  # started afresh: the lab's configuration, or the test's own
        daemons.start_resolver(self.lab, server, wait=wait, config=config)

    def kill_resolver(self, server: Server) -> None:
        self.lab.stop(daemons.resolver_key(server), signal.SIGKILL)

    def kill_resolvers(self, *servers: Server) -> None:
        """SIGKILL several resolvers at the same instant (each signalled before any is waited for)."""
        procs = [self.lab.processes.pop(daemons.resolver_key(s), None) for s in servers]
        for proc in procs:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
        for proc in procs:
            if proc is not None:
                proc.wait(timeout=10)

    def start_resolver(self, server: Server, wait: bool = True) -> None:
        self.sick.discard(server.name)
        daemons.start_resolver(self.lab, server, wait=wait)

    def set_health_record(self, server: Server, health: str) -> None:
        """The health record ``server``'s resolver answers, changed by a reload (no restart): "sick" fails
        the health check while every other query is still answered, as a bad zone pushed everywhere would."""
        daemons.set_health_record(self.lab, server, health)
        if health == "healthy":
            self.sick.discard(server.name)
        else:
            self.sick.add(server.name)

    def signal_resolver(self, server: Server, sig: int) -> None:
        self.lab.signal(daemons.resolver_key(server), sig)

    def resolver_running(self, server: Server) -> bool:
        proc = self.lab.processes.get(daemons.resolver_key(server))
        return proc is not None and proc.poll() is None

    def revive_resolver(self, server: Server) -> None:
        """Thaw ``server``'s resolver, or start it again if it is gone; a bad health record is made good."""
        if self.resolver_running(server):
            self.signal_resolver(server, signal.SIGCONT)
            if server.name in self.sick:
                self.set_health_record(server, "healthy")
        else:
            self.sick.discard(server.name)
            self.start_resolver(server)

    @contextlib.contextmanager
    def probe_loss(self, percent: int) -> Iterator[None]:
        """Drop ``percent`` % of DNS packets, queries and answers alike, on every server's lo while inside.

        The rule sits on the input hook of each server's lo, where its probes of its own resolver pass
        (a drop on the output hook would fail the send at once, which no lost packet does)."""
        rule = f'iifname "lo" udp {{}} 53 numgen random mod 100 < {percent} drop'
        ruleset = (
            "add table inet acd_loss; add chain inet acd_loss in { type filter hook input priority 0; }; "
            f"add rule inet acd_loss in {rule.format('dport')}; add rule inet acd_loss in {rule.format('sport')}"
        )
        try:
            for s in self.servers:
                self.lab.exec(self.lab.ns(s.name), "nft", ruleset)
            yield
        finally:
            for s in self.servers:
                self.lab.exec(self.lab.ns(s.name), "nft", "delete table inet acd_loss", check=False)

    # the client -------------------------------------------------------------

    def client(self, address: str, count: int, rate: float = 0.0, timeline: bool = False) -> subprocess.Popen[str]:
        """Start the lab client in the client namespace; read its JSON with ``client_result``."""
        argv = ["ip", "netns", "exec", self.lab.client, sys.executable, "-m", "anycastd_lab.client", address]
        argv += ["--count", str(count), "--rate", str(rate)] + (["--timeline"] if timeline else [])
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    @staticmethod
    def client_result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the lab client failed ({proc.returncode})")
        result: dict[str, Any] = json.loads(out)
        return result

    def queries(self, address: str, count: int, rate: float = 0.0) -> dict[str, Any]:
        """``count`` queries from the client, each its own flow: who answered, how many were lost."""
        return self.client_result(self.client(address, count, rate))


def process_running(pid: int) -> bool:
    """Alive and not a zombie."""
    with contextlib.suppress(FileNotFoundError, IndexError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return False
