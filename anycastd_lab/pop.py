"""The dual-homed POP, ready to use: an edge router, two ToRs, servers with one uplink to each.

containerlab/anycast-pop.clab.yml, built in namespaces: e1 (the clients' router) spreads
the service addresses over r1 and r2 with ECMP; each ToR keeps one path per healthy
server; every server's anycastd announces to both ToRs, with BFD on each session, and
runs bfdd. The routers run frr/pop/*.conf as they are.

What "a server's path" means here: a server is in the service while at least one ToR's
kernel FIB holds a path to it (``server_paths``), and gone once neither does; the
edge's FIB holds the ToRs (``edge_paths``). Faults are made as on the single-router lab
(anycastd_lab.bgp), each at both ends where a real one would be: a blackholed host is
dropped at both ToRs' ports, a cut uplink at both ends of its link, and a dead ToR
stops every process and drops every frame it is sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any

from anycastd_lab import clab, daemons
from anycastd_lab.base import process_running
from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import Fib
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Server, wait_until

#: The servers' return path as the POP's operator would set it: the clients' prefixes, both families.
RETURN_PATH = "return_path:\n  prefixes: [198.51.100.0/24, '2001:db8:ffff::/64']\n"


class PopLab(BgpLab):
    TOPOLOGY = clab.POP_TOPOLOGY

    def __init__(self, keep_dir: bool = False, return_path: bool = False) -> None:
        super().__init__(keep_dir)
        #: Every server's anycastd keeps its route towards the clients via its live sessions (``return_path``).
        self.return_path = return_path
        self.tor_fibs: dict[str, Fib] = {}
        self._at_edge: dict[str, set[str]] = {}

    @property
    def edge(self) -> str:
        return self.lab.topology.router.name

    @property
    def tors(self) -> list[str]:
        return [r.name for r in self.lab.topology.routers if r.name != self.edge]

    def __exit__(self, *exc: Any) -> None:
        for fib in self.tor_fibs.values():
            fib.close()
        self.tor_fibs.clear()
        super().__exit__(*exc)

    # the routers ------------------------------------------------------------

    def frr_config_of(self, router: str) -> str:
        bound = self.lab.topology.node(router).bound("/etc/frr/frr.conf")
        if bound is None:
            raise RuntimeError(f"{router} has no frr.conf bound in {self.lab.topology_file}")
        return bound.read_text()

    def frr_config(self) -> str:
        return self.frr_config_of(self.edge)

    def _router(self, router: str) -> str | None:
        """The node argument of anycastd_lab.daemons for ``router``: the edge is the lab's "router"."""
        return None if router == self.edge else router

    def start_daemons(self) -> None:
        for router in [self.edge, *self.tors]:
            daemons.start_frr(self.lab, self.frr_config_of(router), self.FRR_DAEMONS, node=self._router(router))
        self.tor_fibs = {tor: Fib(self.lab.ns(tor)) for tor in self.tors}
        for s in self.servers:
            daemons.start_resolver(self.lab, s)
            daemons.start_anycastd(self.lab, s, self.anycastd_config(s))

    def anycastd_config(self, server: Server) -> str:
        return daemons.anycastd_config(self.lab, server) + (RETURN_PATH if self.return_path else "")

    def vtysh_at(self, router: str, command: str) -> str:
        return daemons.vtysh(self.lab, command, node=self._router(router))

    def frr_pid_at(self, router: str, daemon: str) -> int | None:
        try:
            pid = int((daemons.router_dir(self.lab, self._router(router)) / f"{daemon}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_running(pid) else None

    def ensure_frr(self) -> None:
        for router in [self.edge, *self.tors]:
            for daemon in self.FRR_DAEMONS:
                pid = self.frr_pid_at(router, daemon)
                if pid is None:
                    daemons.start_frr(self.lab, self.frr_config_of(router), (daemon,), node=self._router(router))
                else:
                    os.kill(pid, signal.SIGCONT)

    # what the routers hold --------------------------------------------------

    def links_of(self, server: Server) -> dict[str, tuple[str, str, str, str]]:
        """For each ToR ``server`` is linked to: (its v4, its v6, the ToR's interface, the server's interface)."""
        topology = self.lab.topology
        out = {}
        for mine, theirs in topology.uplinks(server.name):
            node = topology.node(server.name)
            out[theirs.node] = (
                str(node.on(mine.interface, 4).ip),
                str(node.on(mine.interface, 6).ip),
                theirs.interface,
                mine.interface,
            )
        return out

    def tor_addresses(self, server: Server, tor: str) -> tuple[str, str]:
        """``tor``'s IPv4 and IPv6 addresses on its link to ``server``: the server's BGP neighbors there."""
        for _, theirs in self.lab.topology.uplinks(server.name):
            if theirs.node == tor:
                node = self.lab.topology.node(tor)
                return str(node.on(theirs.interface, 4).ip), str(node.on(theirs.interface, 6).ip)
        raise KeyError(f"{server.name} has no link to {tor}")

    def client_route(self, server: Server, prefix: str = "198.51.100.0/24") -> frozenset[str]:
        """The gateways of ``server``'s preferred route towards the clients, as its kernel holds it."""
        out = self.lab.exec(self.lab.ns(server.name), "ip", "-j", "route", "show", prefix).stdout
        routes = sorted(json.loads(out or "[]"), key=lambda r: r.get("metric", 0))
        if not routes:
            return frozenset()
        best = routes[0]
        hops = best.get("nexthops") or [best]
        return frozenset(str(h["gateway"]) for h in hops if h.get("gateway"))

    def tor_server_paths(self, tor: str, prefix: str = SERVICE_V4) -> frozenset[str]:
        hops = self.tor_fibs[tor].nexthops(prefix)
        return frozenset(s.name for s in self.servers if set(self.links_of(s)[tor][:2]) & hops)

    def server_paths(self, prefix: str = SERVICE_V4) -> frozenset[str]:
        """The servers at least one ToR forwards ``prefix`` to."""
        return frozenset().union(*(self.tor_server_paths(tor, prefix) for tor in self.tors))

    def _tor_addresses_at_edge(self) -> dict[str, set[str]]:
        """Each ToR's addresses on its link to the edge, its link-local one too: FRR gives an eBGP peer on the
        link its link-local address as the IPv6 next hop. Read once (a veth keeps its address)."""
        if not self._at_edge:
            topology = self.lab.topology
            for _, theirs in topology.uplinks(self.edge):
                if theirs.node not in self.tors:
                    continue
                node = topology.node(theirs.node)
                found = {str(node.on(theirs.interface, v).ip) for v in (4, 6)}
                out = self.lab.exec(self.lab.ns(theirs.node), "ip", "-j", "-6", "addr", "show", "dev", theirs.interface)
                for link in json.loads(out.stdout or "[]"):
                    found |= {a["local"] for a in link.get("addr_info", []) if a.get("scope") == "link"}
                self._at_edge[theirs.node] = found
        return self._at_edge

    def edge_paths(self, prefix: str = SERVICE_V4) -> frozenset[str]:
        """The ToRs the edge forwards ``prefix`` to."""
        hops = self.paths(prefix)
        return frozenset(tor for tor, addresses in self._tor_addresses_at_edge().items() if addresses & hops)

    def wait_paths(self, count: int, timeout: float = 10.0, both_families: bool = True) -> float:
        """Wait until every ToR holds ``count`` servers and the edge both ToRs (both families); seconds waited."""
        started = time.monotonic()
        prefixes = (SERVICE_V4, SERVICE_V6) if both_families else (SERVICE_V4,)
        wait_until(
            lambda: all(
                len(self.tor_server_paths(tor, p)) == count and len(self.edge_paths(p)) == len(self.tors)
                for tor in self.tors
                for p in prefixes
            ),
            timeout,
            interval=0.002,
            what=(
                f"{count} servers at every ToR and {len(self.tors)} ToRs at the edge (now "
                + ", ".join(f"{t}: {sorted(self.tor_server_paths(t))}" for t in self.tors)
                + f"; edge: {sorted(self.edge_paths())})"
            ),
        )
        return time.monotonic() - started

    def wait_zebra_agrees(self, timeout: float = 3.0) -> None:
        return None  # the single-router lab's check; the ToRs' own are in tests/integration/test_pop_lab.py

    # BFD --------------------------------------------------------------------

    def bfd_sessions(self) -> dict[str, str]:
        """Every router's BFD sessions, peer address to state (the addresses are all distinct)."""
        out: dict[str, str] = {}
        for router in [self.edge, *self.tors]:
            for p in json.loads(self.vtysh_at(router, "show bfd peers json") or "[]"):
                out[str(p["peer"])] = str(p["status"])
        return out

    def wait_bfd(self, *servers: Server, up: bool = True, timeout: float = 15.0) -> None:
        """Wait until the ToRs' BFD sessions with ``servers`` (all by default), on every link, are (not) up."""
        addresses = {a for s in servers or self.servers for link in self.links_of(s).values() for a in link[:2]}
        wait_until(
            lambda: all((self.bfd_sessions().get(a) == "up") == up for a in addresses),
            timeout,
            what=f"BFD with {sorted(addresses)} {'up' if up else 'down'} (now {self.bfd_sessions()})",
        )

    # faults -----------------------------------------------------------------

    def _drop(self, ns: str, table: str, device: str, on: bool, percent: int = 100) -> None:
        if on:
            chain = f"{{ type filter hook ingress device {device} priority -500; }}"
            rule = "drop" if percent >= 100 else f"numgen random mod 100 < {int(percent)} drop"
            self.lab.exec(ns, "nft", f"add table netdev {table}; add chain netdev {table} in {chain}; "
                          f"add rule netdev {table} in {rule}")  # fmt: skip
        else:
            self.lab.exec(ns, "nft", f"delete table netdev {table}", check=False)

    def blackhole(self, server: Server, on: bool = True) -> None:
        """Every frame ``server`` sends dropped at every ToR's port, no change of carrier (power cut, panic)."""
        for tor, (_, _, tor_if, _) in self.links_of(server).items():
            self._drop(self.lab.ns(tor), f"acd_blackhole_{server.name}", tor_if, on)

    def cut_uplink(self, server: Server, tor: str, on: bool = True, percent: int = 100) -> None:
        """The link between ``server`` and ``tor`` carries nothing either way (or loses ``percent`` % of the
        frames each way: a lossy link), with no change of carrier."""
        _, _, tor_if, server_if = self.links_of(server)[tor]
        self._drop(self.lab.ns(tor), f"acd_cut_{server.name}", tor_if, on, percent)
        self._drop(self.lab.ns(server.name), f"acd_cut_{tor}", server_if, on, percent)

    def kill_tor(self, tor: str, on: bool = True) -> None:
        """``tor`` dies as in a power cut: every process stopped, every frame it is sent dropped."""
        interfaces = [mine.interface for mine, _ in self.lab.topology.uplinks(tor)]
        sig = signal.SIGSTOP if on else signal.SIGCONT
        if not on:
            for pid in self.lab.commands(tor):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        for device in interfaces:
            self._drop(self.lab.ns(tor), f"acd_dead_{device.replace('-', '_')}", device, on)
        if on:
            for pid in self.lab.commands(tor):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def heal(self) -> None:
        """The single-router lab's, and every ToR alive and every uplink whole."""
        for tor in self.tors:
            self.kill_tor(tor, on=False)
        self.ensure_frr()
        for s in self.servers:
            self.blackhole(s, on=False)
            for tor in self.links_of(s):
                self.cut_uplink(s, tor, on=False)
            self.thaw_host(s)
