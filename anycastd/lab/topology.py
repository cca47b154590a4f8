"""The network-namespace lab: one FRR router, DNS servers, a client.

Theory of operation
-------------------
Every node is a network namespace named ``acd<pid>-<node>``, where ``<pid>``
is the process that built it, so two labs never collide and a lab whose
builder died (SIGKILL, a crashed CI job) is recognised and removed by the
next one. Links are point-to-point veths (this kernel has no bridge type);
addresses come from the documentation ranges only, and no namespace has a
route to anything outside the lab.

Tear-down does not trust bookkeeping: it kills every process still inside
each namespace (``ip netns pids``), stopped ones included, and then deletes
the namespace. It runs from ``Lab.__exit__``, so also when a test fails.

This module is test and demo infrastructure: it drives ``ip``, FRR's daemons
and Unbound as an operator would, from the command line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

SERVICE_V4 = "203.0.113.53/32"
SERVICE_V6 = "2001:db8::53/128"
ROUTER_ASN = 65000
HEALTH_QNAME = "health.example."
WHOAMI_QNAME = "whoami.example."
NS_PREFIX = "acd"
#: The router configurations users copy (frr/ in the source tree); the lab runs these very files.
FRR_CONFIGS = Path(__file__).resolve().parents[2] / "frr"


def frr_file(relative: str) -> Path:
    path = FRR_CONFIGS / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the lab runs from a source checkout, which has frr/")
    return path


def sysctls(path: Path) -> list[str]:
    """``key=value`` for every setting in a sysctl.d file."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            out.append(f"{key.strip()}={value.strip()}")
    return out


@dataclass(frozen=True)
class Server:
    index: int  # 1-based

    @property
    def name(self) -> str:
        return f"s{self.index}"

    @property
    def v4(self) -> str:
        return f"192.0.2.{8 * self.index + 2}"

    @property
    def router_v4(self) -> str:
        return f"192.0.2.{8 * self.index + 1}"

    @property
    def v6(self) -> str:
        return f"2001:db8:0:{self.index}::2"

    @property
    def router_v6(self) -> str:
        return f"2001:db8:0:{self.index}::1"

    @property
    def asn(self) -> int:
        return ROUTER_ASN + self.index


CLIENT_V4, CLIENT_ROUTER_V4 = "198.51.100.2", "198.51.100.1"
CLIENT_V6, CLIENT_ROUTER_V6 = "2001:db8:ffff::2", "2001:db8:ffff::1"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace(ns: str) -> None:
    """Kill everything inside ``ns`` (stopped processes too), then delete it."""
    for _ in range(50):
        pids = [int(p) for p in run("ip", "netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    run("ip", "netns", "del", ns, check=False)


def reap_stale_labs() -> None:
    """Remove namespaces left by a lab whose builder process is gone."""
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        head = name.split("-", 1)[0]
        if head.startswith(NS_PREFIX) and head[len(NS_PREFIX) :].isdigit():
            owner = int(head[len(NS_PREFIX) :])
            if owner != os.getpid() and not _alive(owner):
                log.warning("removing namespace %s left by a lab whose process %d is gone", name, owner)
                kill_namespace(name)


@dataclass
class Lab:
    """Router + ``servers`` DNS servers + client. Use as a context manager."""

    servers: int = 3
    keep_dir: bool = False
    tag: str = field(default_factory=lambda: f"{NS_PREFIX}{os.getpid()}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="anycastd-lab-")))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    @property
    def server_list(self) -> list[Server]:
        return [Server(i) for i in range(1, self.servers + 1)]

    def ns(self, node: str) -> str:
        return f"{self.tag}-{node}"

    @property
    def router(self) -> str:
        return self.ns("r")

    @property
    def client(self) -> str:
        return self.ns("c")

    # lifecycle --------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self.dump_logs()
        self.down()

    def build(self) -> None:
        reap_stale_labs()
        self.workdir.chmod(0o755)  # FRR drops to the frr user and must reach its files here
        for node in ["r", "c", *(s.name for s in self.server_list)]:
            name = self.ns(node)
            kill_namespace(name)  # a lab of this very process that was not torn down
            run("ip", "netns", "add", name)
            self.namespaces.append(name)
            self.exec(name, "ip", "link", "set", "lo", "up")
            for key in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
                self.exec(name, "sysctl", "-qw", key)
        for key in sysctls(frr_file("sysctl.d/90-anycastd-router.conf")):
            self.exec(self.router, "sysctl", "-qw", key)
        for s in self.server_list:
            self._link(s.name, (s.router_v4, s.router_v6), (s.v4, s.v6), prefix4=29)
        self._link("c", (CLIENT_ROUTER_V4, CLIENT_ROUTER_V6), (CLIENT_V4, CLIENT_V6), prefix4=24)
        (self.workdir / "router").mkdir()

    def _link(self, node: str, router: tuple[str, str], peer: tuple[str, str], prefix4: int) -> None:
        """A veth named after ``node`` on the router and eth0 in ``node``, each with (IPv4, IPv6)."""
        ns = self.ns(node)
        run("ip", "link", "add", node, "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", ns)
        for where, ifname, (a4, a6) in ((self.router, node, router), (ns, "eth0", peer)):
            self.exec(where, "ip", "addr", "add", f"{a4}/{prefix4}", "dev", ifname)
            self.exec(where, "ip", "addr", "add", f"{a6}/64", "dev", ifname, "nodad")
            self.exec(where, "ip", "link", "set", ifname, "up")
        self.exec(ns, "ip", "route", "add", "default", "via", router[0])
        self.exec(ns, "ip", "-6", "route", "add", "default", "via", router[1])

    def down(self) -> None:
        for name, proc in list(self.processes.items()):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.processes.pop(name)
        for ns in reversed(self.namespaces):
            kill_namespace(ns)
        self.namespaces.clear()
        if not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def dump_logs(self, lines: int = 40) -> None:
        """Print the tail of every daemon log: what a failed test needs to be understood."""
        for path in sorted(self.workdir.rglob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"----- {path.relative_to(self.workdir)} (last {len(text)} lines)", file=sys.stderr)
            print("\n".join(text), file=sys.stderr)

    # helpers ----------------------------------------------------------------

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *argv, check=check)

    def spawn(self, key: str, ns: str, argv: list[str], logfile: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process in ``ns``; its output goes to ``logfile``."""
        with logfile.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[key] = proc
        return proc

    def stop(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes.pop(key, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(timeout=10)

    def signal(self, key: str, sig: int) -> None:
        self.processes[key].send_signal(sig)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "it") -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)
