"""The sidecar lab, ready to use: FRR with BGP ECMP, Unbound and anycastd on every server.

Tests, benchmarks and the demo drive the lab through this one class, so they
all exercise the same topology and the same failure actions.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

from anycastd.lab import daemons
from anycastd.lab.fib import Fib
from anycastd.lab.topology import SERVICE_V4, SERVICE_V6, Lab, Server, run, wait_until


class BgpLab:
    def __init__(self, servers: int = 3, keep_dir: bool = False) -> None:
        self.lab = Lab(servers=servers, keep_dir=keep_dir)
        self.fib: Fib | None = None

    @property
    def servers(self) -> list[Server]:
        return self.lab.server_list

    def __enter__(self) -> BgpLab:
        self.lab.__enter__()
        try:
            daemons.start_frr(self.lab, daemons.frr_bgp_config())
            for s in self.servers:
                daemons.start_unbound(self.lab, s)
                daemons.start_anycastd(self.lab, s)
            self.fib = Fib(self.lab.router)
            self.wait_paths(len(self.servers), timeout=60)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.fib is not None:
            self.fib.close()
            self.fib = None
        self.lab.__exit__(kind, exc, tb)

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

    # failures -------------------------------------------------------------

    def kill_resolver(self, server: Server) -> None:
        self.lab.stop(daemons.unbound_key(server), signal.SIGKILL)

    def start_resolver(self, server: Server, wait: bool = True) -> None:
        daemons.start_unbound(self.lab, server, wait=wait)

    def signal_resolver(self, server: Server, sig: int) -> None:
        self.lab.signal(daemons.unbound_key(server), sig)

    def kill_anycastd(self, server: Server) -> None:
        self.lab.stop(daemons.anycastd_key(server), signal.SIGKILL)

    def start_anycastd(self, server: Server, config: str | None = None) -> None:
        daemons.start_anycastd(self.lab, server, config)

    def signal_anycastd(self, server: Server, sig: int) -> None:
        self.lab.signal(daemons.anycastd_key(server), sig)

    def anycastd_running(self, server: Server) -> bool:
        proc = self.lab.processes.get(daemons.anycastd_key(server))
        return proc is not None and proc.poll() is None

    def resolver_running(self, server: Server) -> bool:
        proc = self.lab.processes.get(daemons.unbound_key(server))
        return proc is not None and proc.poll() is None

    # operating anycastd -----------------------------------------------------

    def anycastctl(self, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
        return daemons.anycastctl(self.lab, server, *args)

    def anycastctl_ready(self, server: Server, timeout: float = 10.0) -> None:
        """Wait until anycastd on ``server`` answers on its control socket."""
        what = f"anycastd on {server.name} answering"
        wait_until(lambda: self.anycastctl(server, "status").returncode == 0, timeout, what=what)

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
        pids = run("ip", "netns", "pids", self.lab.ns(server.name), check=False).stdout.split()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"exabgp" in argv and b"-m" in argv:
                return int(pid)
        return None

    def bgp_established(self, server: Server) -> bool:
        out = self.vtysh(f"show bgp neighbor {server.v4} json")
        return '"bgpState":"Established"' in out.replace(" ", "")

    def restore(self) -> None:
        """Bring every daemon back and wait for all paths: each test starts from a healthy lab."""
        for s in self.servers:
            config, _, _ = daemons.anycastd_paths(self.lab, s)
            if self.anycastd_running(s) and config.read_text() != daemons.anycastd_config(self.lab, s):
                self.lab.stop(daemons.anycastd_key(s), signal.SIGKILL)  # a test changed its configuration
            if self.anycastd_running(s):
                self.signal_anycastd(s, signal.SIGCONT)
            else:
                self.start_anycastd(s)
            if self.resolver_running(s):
                self.signal_resolver(s, signal.SIGCONT)
            else:
                self.start_resolver(s)
        for s in self.servers:  # end any maintenance a test began: it is persisted, also across restarts
            self.anycastctl_ready(s)
            if self.anycastctl(s, "announce", "--all").returncode != 0:
                raise RuntimeError(f"anycastctl announce --all failed on {s.name}")
        self.wait_paths(len(self.servers), timeout=30)

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
