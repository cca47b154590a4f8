"""The sidecar lab, ready to use: FRR with BGP ECMP, a resolver (BIND or Unbound) and anycastd on every server.

Tests, benchmarks and the demo drive the lab through this one class, so they
all exercise the same topology and the same failure actions.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from anycastd.cli.anycastctl import ANSWERED
from anycastd_lab import daemons
from anycastd_lab.base import DnsLab, process_running
from anycastd_lab.topology import Server, wait_until


class BgpLab(DnsLab):
    #: bfdd before bgpd: bgpd's sessions ask for BFD (frr/bgp/frr.conf) through zebra, and bfdd answers
    FRR_DAEMONS: tuple[str, ...] = ("zebra", "bfdd", "bgpd")

    def frr_config(self) -> str:
        return daemons.frr_bgp_config()

    def anycastd_config(self, server: Server) -> str:
        """The configuration this lab runs anycastd with on ``server`` (what ``revive`` goes back to)."""
        return daemons.anycastd_config(self.lab, server)

    def weighted_config(self, server: Server, weight: int | None, degraded: tuple[int, str] | None = None) -> str:
        """``server``'s sidecar configuration with the service weighing ``weight`` (None: no weight); with
        ``degraded`` (degraded_weight, the check's degraded_when as YAML flow), it sheds load when slow."""
        config = self.anycastd_config(server)
        if weight is None:
            return config
        marker, answer = "    prefixes: [", "        answer: healthy\n"
        assert config.count(marker) == 1 and config.count(answer) == 1, config
        lines = f"    weight: {weight}\n"
        if degraded is not None:
            lines += f"    degraded_weight: {degraded[0]}\n"
            config = config.replace(answer, f"{answer}        degraded_when: {degraded[1]}\n")
        return config.replace(marker, f"{lines}{marker}")

    def many_services_config(self, server: Server, addresses: Sequence[str]) -> str:
        """``server``'s configuration with one more service per address (a /32 or /128 each, named after it),
        every one with the lab's check, field for field: they share one probe loop."""
        config = self.anycastd_config(server)
        check = config.split("    checks:\n", 1)[1]
        return config + "".join(
            f"  {_named(a)}:\n    prefixes: [{a}]\n    interface: lo\n    checks:\n{check}" for a in addresses
        )

    def accept_many(self, server: Server, v4: str, v6: str, count: int) -> None:
        """Let the router take from ``server`` the prefixes within ``v4`` and ``v6`` too, and up to ``count``
        of them (frr/bgp/frr.conf takes each server's service prefixes alone, 16 at most)."""
        names = {s.name: i + 1 for i, s in enumerate(self.servers)}
        assert server.name in names, server
        self.vtysh_config(
            f"ip prefix-list FROM-{server.name}-V4 seq 20 permit {v4} le 32\n"
            f"ipv6 prefix-list FROM-{server.name}-V6 seq 20 permit {v6} le 128\n"
            "router bgp 65000\n"
            "address-family ipv4 unicast\n"
            f"neighbor DNS4 maximum-prefix {count} restart 1\n"
            "exit-address-family\n"
            "address-family ipv6 unicast\n"
            f"neighbor DNS6 maximum-prefix {count} restart 1"
        )

    def weigh(self, weights: Sequence[int | None], degraded: tuple[int, str] | None = None) -> None:
        """Reload each server's anycastd with its weight (in the order of ``servers``), one after the other;
        ``degraded`` as in ``weighted_config``, for every weighted server."""
        for server, weight in zip(self.servers, weights, strict=True):
            config = self.weighted_config(server, weight, degraded)
            self.reload_anycastd(server, config, expect="reloaded")

    @contextlib.contextmanager
    def slowed(self, server: Server, stop: float = 0.040, run: float = 0.010) -> Iterator[None]:
        """``server``'s resolver slowed while inside: stopped ``stop`` s of every ``stop + run`` (SIGSTOP,
        SIGCONT from a thread of the lab's), so that it answers every query, late. No netem here."""
        done = threading.Event()

        def cycle() -> None:
            while not done.is_set():
                self.signal_resolver(server, signal.SIGSTOP)
                time.sleep(stop)
                self.signal_resolver(server, signal.SIGCONT)
                time.sleep(run)

        thread = threading.Thread(target=cycle, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.signal_resolver(server, signal.SIGCONT)

    def kernel_shares(self, prefix: str) -> dict[str, float]:
        """Each server's share of the router's kernel nexthop weights for ``prefix``, by server name."""
        assert self.fib is not None
        weights = self.fib.weights(prefix)
        names = {a: s.name for s in self.servers for a in (s.v4, s.v6)}
        total = sum(weights.values())
        return {names[hop]: w / total for hop, w in weights.items()} if total else {}

    def start_daemons(self) -> None:
        daemons.start_frr(self.lab, self.frr_config(), self.FRR_DAEMONS)
        for s in self.servers:
            daemons.start_resolver(self.lab, s)
            daemons.start_anycastd(self.lab, s, self.anycastd_config(s))

    # anycastd's failures -----------------------------------------------------

    def kill_anycastd(self, server: Server) -> None:
        self.lab.stop(daemons.anycastd_key(server), signal.SIGKILL)

    def start_anycastd(self, server: Server, config: str | None = None, user: str | None = None) -> None:
        daemons.start_anycastd(self.lab, server, config, user)

    def signal_anycastd(self, server: Server, sig: int) -> None:
        self.lab.signal(daemons.anycastd_key(server), sig)

    def anycastd_running(self, server: Server) -> bool:
        proc = self.lab.processes.get(daemons.anycastd_key(server))
        return proc is not None and proc.poll() is None

    # operating anycastd -----------------------------------------------------

    def anycastctl(self, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
        return daemons.anycastctl(self.lab, server, *args)

    def wait_status_ok(self, server: Server, timeout: float = 10.0) -> None:
        """Wait until `anycastctl status` on ``server`` exits 0: everything announced, every session up."""
        what = f"anycastctl status on {server.name} exiting 0"
        wait_until(lambda: self.anycastctl(server, "status").returncode == 0, timeout, what=what)

    def anycastctl_ready(self, server: Server, timeout: float = 10.0) -> None:
        """Wait until anycastd on ``server`` answers on its control socket; say what it last answered if not."""
        last: list[subprocess.CompletedProcess[str]] = []

        def answered() -> bool:
            last[:] = [self.anycastctl(server, "status")]
            return last[0].returncode in ANSWERED

        try:
            wait_until(answered, timeout, what=f"anycastd on {server.name} answering")
        except TimeoutError as exc:
            said = f"exit {last[0].returncode}: {(last[0].stdout + last[0].stderr).strip()[-400:]}" if last else "-"
            running = "running" if self.anycastd_running(server) else "not running"
            raise TimeoutError(f"{exc}; anycastd is {running}, anycastctl said: {said}") from None

    def log_size(self, server: Server) -> int:
        _, logfile, _ = daemons.anycastd_paths(self.lab, server)
        return logfile.stat().st_size

    def log_since(self, server: Server, offset: int) -> str:
        _, logfile, _ = daemons.anycastd_paths(self.lab, server)
        with logfile.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def reload_anycastd(self, server: Server, config: str, expect: str, timeout: float = 10.0) -> str:
        """Write ``config``, send SIGHUP, and wait for ``expect`` in the log; returns what was logged."""
        path, _, _ = daemons.anycastd_paths(self.lab, server)
        offset = self.log_size(server)
        path.write_text(config)
        self.signal_anycastd(server, signal.SIGHUP)
        wait_until(lambda: expect in self.log_since(server, offset), timeout, what=f"'{expect}' in the log")
        return self.log_since(server, offset)

    def metrics(self, server: Server) -> str:
        """anycastd's Prometheus page, fetched over HTTP inside the server's namespace."""
        url = f"http://{server.v4}:{daemons.METRICS_PORT}/metrics"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return self.lab.exec(self.lab.ns(server.name), sys.executable, "-c", code).stdout

    def exabgp_pid(self, server: Server) -> int | None:
        """The ExaBGP process anycastd runs on ``server``, found by its command line."""
        for pid, argv in self.lab.commands(server.name).items():
            if b"-m" in argv and (b"exabgp" in argv or b"anycastd.announce.exabgp_run" in argv):
                return pid
        return None

    def helper_pid(self, server: Server) -> int | None:
        """ExaBGP's API helper on ``server`` (anycastd/announce/exabgp_helper.py), found by its command line."""
        for pid, argv in self.lab.commands(server.name).items():
            if any(arg.endswith(b"exabgp_helper.py") for arg in argv):
                return pid
        return None

    def bfd_sessions(self) -> dict[str, str]:
        """The router's BFD sessions (bfdd), peer address to state."""
        out = json.loads(self.vtysh("show bfd peers json") or "[]")
        return {str(p["peer"]): str(p["status"]) for p in out}

    def wait_bfd(self, *servers: Server, up: bool = True, timeout: float = 15.0) -> None:
        """Wait until the router's BFD sessions with ``servers`` (all by default), both families, are (not) up.
        BFD comes up a second or two after BGP: until then a session sends at most once a second (RFC 5880)."""
        addresses = {a for s in servers or self.servers for a in (s.v4, s.v6)}
        wait_until(
            lambda: all((self.bfd_sessions().get(a) == "up") == up for a in addresses),
            timeout,
            what=f"BFD with {sorted(addresses)} {'up' if up else 'down'} on the router (now {self.bfd_sessions()})",
        )

    def server_bfd(self, server: Server) -> dict[str, dict[str, Any]]:
        """``server``'s own BFD sessions as its anycastd reports them (status ``bfd.sessions``), by neighbor."""
        doc = json.loads(self.anycastctl(server, "--json", "status").stdout)
        sessions: dict[str, dict[str, Any]] = doc["bfd"]["sessions"]
        return sessions

    def wait_server_bfd(self, server: Server, state: str, timeout: float = 15.0) -> None:
        """Wait until ``server``'s anycastd sees each of its BFD sessions with the router in ``state``."""
        wait_until(
            lambda: {v["state"] for v in self.server_bfd(server).values()} == {state},
            timeout,
            interval=0.05,
            what=f"{server.name}'s BFD sessions {state}",
        )

    def bfdd_pid(self, server: Server) -> int | None:
        """The bfdd anycastd runs on ``server`` (anycastd.announce.bfdd), found by its command line."""
        for pid, argv in self.lab.commands(server.name).items():
            if argv and argv[0].endswith(b"bfdd") and process_running(pid):
                return pid
        return None

    def explain(self) -> str:
        sessions = self.vtysh("show bgp summary")
        return f"\nthe router's BGP sessions:\n{sessions}\nits BFD sessions: {self.bfd_sessions()}"

    def bgp_established(self, server: Server) -> bool:
        out = self.vtysh(f"show bgp neighbor {server.v4} json")
        return '"bgpState":"Established"' in out.replace(" ", "")

    def revive(self, server: Server) -> None:
        """Bring ``server``'s resolver and anycastd back (started, thawed); does not wait for them."""
        config, _, _ = daemons.anycastd_paths(self.lab, server)
        if self.anycastd_running(server) and config.read_text() != self.anycastd_config(server):
            self.lab.stop(daemons.anycastd_key(server), signal.SIGKILL)  # a test changed its configuration
        if self.anycastd_running(server):
            self.signal_anycastd(server, signal.SIGCONT)
        else:
            self.start_anycastd(server, self.anycastd_config(server))
        self.revive_resolver(server)

    def undrain(self, server: Server) -> None:
        """End any maintenance a test began on ``server``: it is persisted, also across restarts."""
        self.anycastctl_ready(server)
        if self.anycastctl(server, "announce", "--all").returncode != 0:
            raise RuntimeError(f"anycastctl announce --all failed on {server.name}")

    def heal(self) -> None:
        """Undo every fault a test can make of the network and the hosts (not of anycastd or the resolvers)."""
        self.ensure_frr()
        self.links_up()
        for s in self.servers:
            self.blackhole(s, on=False)
            self.thaw_host(s)

    def restore(self) -> None:
        """Bring every daemon back and wait for all paths and BFD sessions: each test starts from a healthy lab."""
        self.heal()
        for s in self.servers:
            self.revive(s)
        for s in self.servers:
            self.undrain(s)
        self.wait_paths(len(self.servers), timeout=30)
        with_bfd = [s for s in self.servers if "bfd:" in daemons.anycastd_paths(self.lab, s)[0].read_text()]
        if with_bfd:
            self.wait_bfd(*with_bfd, timeout=30)
        for s in with_bfd:  # anycastd asks bfdd every 0.5 s: until then its status says the session is not up
            self.wait_status_ok(s)


def _named(prefix: str) -> str:
    """A service name for a host prefix: "2001:db8:53::1/128" -> "a-2001-db8-53--1"."""
    return "a-" + prefix.split("/", maxsplit=1)[0].replace(".", "-").replace(":", "-")
