"""The network-namespace lab: the containerlab reference topology, built in namespaces.

Theory of operation
-------------------
The nodes, links and addresses come from a containerlab topology file
(``containerlab/*.clab.yml``, read by ``clab``), the same file operators
deploy with Docker: a namespace per node, a veth per link, and each node's
``exec`` lines run in its namespace, so the two labs cannot drift apart.

Every node is a network namespace named ``acd<pid>-<topology>-<node>``, where
``<pid>`` is the process that built it, so no two labs collide (one process may
run both variants at once) and a lab whose builder died (SIGKILL, a crashed CI
job) is recognised and removed by the next one. Links are point-to-point
veths (this kernel has no bridge type); addresses come from the documentation
ranges only, and no namespace has a route to anything outside the lab.

Tear-down does not trust bookkeeping: it kills every process still inside
each namespace (``ip netns pids``), stopped ones included, and then deletes
the namespace. It runs from ``Lab.__exit__``, so also when a test fails.

This module is test and demo infrastructure: it drives ``ip``, FRR's daemons,
BIND and Unbound as an operator would, from the command line.
"""

from __future__ import annotations

import contextlib
import functools
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

from anycastd.config import sidecar as config
from anycastd_lab import clab

log = logging.getLogger(__name__)

SERVICE_V4 = "203.0.113.53/32"
SERVICE_V6 = "2001:db8::53/128"
ROUTER_ASN = 65000
HEALTH_QNAME = "health.example."
WHOAMI_QNAME = "whoami.example."
NS_PREFIX = "acd"
#: The router configurations users copy (frr/ in the source tree); the lab runs these very files.
FRR_CONFIGS = clab.ROOT / "frr"


def frr_file(relative: str) -> Path:
    path = FRR_CONFIGS / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the lab runs from a source checkout, which has frr/")
    return path


@dataclass(frozen=True)
class Server:
    """A DNS server node of the topology file, with what the lab needs to know of it."""

    name: str
    resolver: str  # "bind" or "unbound"
    interface: str  # its end of the link to the router
    v4: str  # its admin addresses
    v6: str
    router_v4: str  # the router's end of the link
    router_v6: str
    asn: int | None  # from its bound anycastd.yaml; None in the router-side variant

    @property
    def resolver_name(self) -> str:
        return {"bind": "BIND", "unbound": "Unbound"}[self.resolver]

    @classmethod
    def of(cls, topology: clab.Topology, node: clab.Node) -> Server:
        v4, router_v4 = topology.uplink_addresses(node.name, 4)
        v6, router_v6 = topology.uplink_addresses(node.name, 6)
        bound = node.bound(clab.ANYCASTD_CONFIG)
        return cls(
            node.name,
            str(node.resolver),
            topology.uplink(node.name)[0].interface,
            str(v4.ip),
            str(v6.ip),
            str(router_v4.ip),
            str(router_v6.ip),
            config.load(bound).local_asn if bound is not None else None,
        )


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
    """The nodes, links and addresses of a containerlab topology file, in namespaces. Use as a context manager."""

    topology_file: Path = clab.BGP_TOPOLOGY
    keep_dir: bool = False
    tag: str = field(default_factory=lambda: f"{NS_PREFIX}{os.getpid()}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="anycastd-lab-")))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    topology: clab.Topology = field(init=False)

    def __post_init__(self) -> None:
        self.topology = clab.load(self.topology_file)

    @functools.cached_property
    def _servers(self) -> tuple[Server, ...]:
        return tuple(Server.of(self.topology, node) for node in self.topology.servers)

    @property
    def server_list(self) -> list[Server]:
        """The servers, read once: each loads its anycastd.yaml (about 3 ms), and a FIB poll every 2 ms asks
        for them (DnsLab.server_paths)."""
        return list(self._servers)

    def ns(self, node: str) -> str:
        return f"{self.tag}-{self.topology.name}-{node}"

    @property
    def router(self) -> str:
        return self.ns(self.topology.router.name)

    @property
    def client(self) -> str:
        return self.ns(self.topology.client.name)

    @property
    def client_gateway(self) -> str:
        """The router's IPv4 address on the client's link (where `anycastd router` serves metrics)."""
        return str(self.topology.uplink_addresses(self.topology.client.name, 4)[1].ip)

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
        """What containerlab does with the file: a namespace per node, a veth per link, each node's exec lines."""
        reap_stale_labs()
        self.workdir.chmod(0o755)  # FRR drops to the frr user and must reach its files here
        for node in self.topology.nodes:
            name = self.ns(node.name)
            kill_namespace(name)  # a lab of this very process that was not torn down
            run("ip", "netns", "add", name)
            self.namespaces.append(name)
            self.exec(name, "ip", "link", "set", "lo", "up")
            # Containers' addresses are usable at once; the file says nodad for the same reason.
            for key in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
                self.exec(name, "sysctl", "-qw", key)
        for link in self.topology.links:
            a, b = link.a, link.b
            peer = ("peer", "name", b.interface, "netns", self.ns(b.node))
            run("ip", "link", "add", "name", a.interface, "netns", self.ns(a.node), "type", "veth", *peer)
            for end in (a, b):
                self.exec(self.ns(end.node), "ip", "link", "set", end.interface, "up")
        for node in self.topology.nodes:
            for argv in node.commands():
                self.exec(self.ns(node.name), *argv)
        (self.workdir / "router").mkdir()

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
        """Print the tail of every daemon log, and which daemons still run: what a failed test needs."""
        for key, proc in sorted(self.processes.items()):
            code = proc.poll()
            state = "running" if code is None else f"exited with {code}"
            print(f"----- {key} (pid {proc.pid}): {state}", file=sys.stderr)
        for path in sorted(self.workdir.rglob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"----- {path.relative_to(self.workdir)} (last {len(text)} lines)", file=sys.stderr)
            print("\n".join(text), file=sys.stderr)

    # helpers ----------------------------------------------------------------

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *argv, check=check)

    def commands(self, node: str) -> dict[int, list[bytes]]:
        """Every process in ``node``'s namespace, pid to command line (those that exit meanwhile left out)."""
        out = {}
        for pid in run("ip", "netns", "pids", self.ns(node), check=False).stdout.split():
            try:
                out[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
        return out

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


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    what: str = "it",
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what``, with ``explain()``'s
    evidence (a daemon's log, say) when given."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            evidence = f"\n{explain()}" if explain is not None else ""
            raise TimeoutError(f"{what} did not happen within {timeout:g} s{evidence}")
        time.sleep(interval)
