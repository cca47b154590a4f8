"""What every lab variant shares: the router's FIB, the resolvers, the client.

``BgpLab`` (anycastd beside each resolver, BGP to FRR) and ``StaticLab``
(`anycastd router` on the router, static routes in FRR) build on this, so
tests, benchmarks and the demo measure both variants the same way.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from types import TracebackType
from typing import Any, Self

from anycastd.lab import clab, daemons
from anycastd.lab.fib import Fib
from anycastd.lab.topology import SERVICE_V4, SERVICE_V6, Lab, Server, run, wait_until


class DnsLab:
    #: the containerlab topology file this variant's lab is built from
    TOPOLOGY = clab.BGP_TOPOLOGY

    def __init__(self, keep_dir: bool = False) -> None:
        self.lab = Lab(self.TOPOLOGY, keep_dir=keep_dir)
        self.fib: Fib | None = None

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
            self.wait_paths(len(self.servers), timeout=60)
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
        wait_until(
            lambda: all(len(self.paths(p)) == count for p in prefixes),
            timeout,
            interval=0.002,
            what=f"{count} paths in the router's FIB (now {sorted(self.paths())})",
        )
        return time.monotonic() - started

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

    def vtysh(self, command: str) -> str:
        return daemons.vtysh(self.lab, command)

    def vtysh_config(self, lines: str) -> None:
        """Apply configuration lines on the router, as an operator at the vtysh prompt would."""
        argv = ["vtysh", "--vty_socket", str(self.lab.workdir / "router"), "-c", "configure terminal"]
        for line in lines.splitlines():
            argv += ["-c", line]
        run(*argv)

    # resolvers ------------------------------------------------------------

    def kill_resolver(self, server: Server) -> None:
        self.lab.stop(daemons.resolver_key(server), signal.SIGKILL)

    def start_resolver(self, server: Server, wait: bool = True) -> None:
        daemons.start_resolver(self.lab, server, wait=wait)

    def signal_resolver(self, server: Server, sig: int) -> None:
        self.lab.signal(daemons.resolver_key(server), sig)

    def resolver_running(self, server: Server) -> bool:
        proc = self.lab.processes.get(daemons.resolver_key(server))
        return proc is not None and proc.poll() is None

    def revive_resolver(self, server: Server) -> None:
        """Thaw ``server``'s resolver, or start it again if it is gone."""
        if self.resolver_running(server):
            self.signal_resolver(server, signal.SIGCONT)
        else:
            self.start_resolver(server)

    # the client -------------------------------------------------------------

    def client(self, address: str, count: int, rate: float = 0.0, timeline: bool = False) -> subprocess.Popen[str]:
        """Start the lab client in the client namespace; read its JSON with ``client_result``."""
        argv = ["ip", "netns", "exec", self.lab.client, sys.executable, "-m", "anycastd.lab.client", address]
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
