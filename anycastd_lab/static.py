"""The router-side lab, ready to use: FRR with zebra and staticd, `anycastd router`, resolvers only on the servers.

The servers run no BGP and no anycastd: each has the service address on
``lo`` (an exec line of containerlab/anycast-dns-static.clab.yml) and a
resolver, BIND or Unbound, listening on it. `anycastd router` in the router's
namespace probes them and keeps FRR's static routes in step.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from anycastd.announce.frr import parse_running_config
from anycastd.cli.anycastctl import ANSWERED
from anycastd.core.routes import Installed
from anycastd_lab import clab, daemons
from anycastd_lab.base import DnsLab
from anycastd_lab.topology import run, wait_until


class StaticLab(DnsLab):
    TOPOLOGY = clab.STATIC_TOPOLOGY
    FRR_DAEMONS = ("zebra", "staticd")

    def frr_config(self) -> str:
        return daemons.frr_static_config()

    def start_daemons(self) -> None:
        daemons.start_frr(self.lab, self.frr_config(), self.FRR_DAEMONS)
        for s in self.servers:
            daemons.start_resolver(self.lab, s)
        daemons.start_anycastd_router(self.lab)

    # anycastd router --------------------------------------------------------

    def running(self) -> bool:
        proc = self.lab.processes.get(daemons.ROUTER_KEY)
        return proc is not None and proc.poll() is None

    def start_anycastd(self, config: str | None = None) -> None:
        daemons.start_anycastd_router(self.lab, config)

    def stop_anycastd(self, sig: int = signal.SIGTERM) -> None:
        self.lab.stop(daemons.ROUTER_KEY, sig)

    def anycastctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return daemons.anycastctl_router(self.lab, *args)

    def anycastctl_ready(self, timeout: float = 10.0) -> None:
        wait_until(lambda: self.anycastctl("status").returncode in ANSWERED, timeout, what="anycastd router answering")

    def log_size(self) -> int:
        _, logfile, _ = daemons.router_paths(self.lab)
        return logfile.stat().st_size

    def log_since(self, offset: int) -> str:
        _, logfile, _ = daemons.router_paths(self.lab)
        with logfile.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def metrics(self) -> str:
        url = f"http://{self.lab.client_gateway}:{daemons.METRICS_PORT}/metrics"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return self.lab.exec(self.lab.router, sys.executable, "-c", code).stdout

    def static_routes(self) -> list[Installed]:
        """What staticd holds, as anycastd itself reads it."""
        return parse_running_config(self.vtysh_staticd("show running-config"))

    def vtysh_staticd(self, command: str) -> str:
        return run("vtysh", "--vty_socket", str(self.lab.workdir / "router"), "-d", "staticd", "-c", command).stdout

    def restore(self) -> None:
        """Every resolver and anycastd router running, no server drained, every path in the FIB."""
        self.ensure_frr()
        self.links_up()
        for s in self.servers:
            self.blackhole(s, on=False)
            self.thaw_host(s)
        path, _, _ = daemons.router_paths(self.lab)
        if self.running() and path.read_text() != daemons.router_config(self.lab):
            self.stop_anycastd(signal.SIGKILL)  # a test changed its configuration
        if not self.running():
            self.start_anycastd()
        for s in self.servers:
            self.revive_resolver(s)
        self.anycastctl_ready()
        if self.anycastctl("announce", "--all").returncode != 0:
            raise RuntimeError("anycastctl announce --all failed on the router")
        self.wait_paths(len(self.servers), timeout=30)
        self.wait_staticd()

    def wait_staticd(self, timeout: float = 10.0) -> None:
        """Wait until staticd itself holds a route per server and family (the kernel may keep old ones)."""
        want = 2 * len(self.servers)
        wait_until(lambda: len(self.static_routes()) == want, timeout, what=f"{want} static routes in staticd")
