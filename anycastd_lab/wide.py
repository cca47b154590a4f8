"""Many servers behind one router: both variants' labs at 64-way ECMP, built from generated topology files.

``wide_topology(n)`` writes a containerlab file of the same shape as
containerlab/anycast-dns-static.clab.yml (an FRR router running `anycastd
router`, a client, Unbound servers with the service addresses on ``lo``), but
with ``n`` servers, each with its own Unbound configuration beside it:

* server ``sK`` (K = 1..n) is on the router's interface ``sK``, a /30 of
  192.0.2.0/24 (router .4K-3, server .4K-2) and 2001:db8:0:K::/64 (K in hex);
* 64 servers fill 192.0.2.0/24, so 64 is the most this addressing takes.

``wide_topology(n, sidecar=True)`` is the sidecar variant's of the same shape,
as containerlab/anycast-dns.clab.yml is for three: each server also has its
anycastd.yaml (AS 65000 + K, one eBGP session per family with the router), and
beside the file is the router's frr.conf: frr/bgp/frr.conf with one neighbor
pair per server, ``maximum-paths`` of at least ``n``, and the import policy
`anycastd frr-policy` generates from those files. The wide sidecar lab runs no
BFD: it would be 64 more bfdd processes, and a resolver's death, a drain and
the spread of flows do not involve it (bench/bfd.py and bench/pop.py measure BFD).

``WideLab(n)`` is StaticLab on the first file, ``WideBgpLab(n)`` BgpLab on the
second; ``ready_in`` is how long the controllers took from their start until
every server's path was in the router's kernel FIB (both families). ``spread``
sends ``flows`` distinct flows from the client to the service address and
counts, on the router, the ones forwarded to each server (an nftables counter
per server interface).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from anycastd.announce import frr_policy
from anycastd.config import sidecar as sidecar_config
from anycastd_lab import clab, daemons
from anycastd_lab.base import DnsLab
from anycastd_lab.bgp import BgpLab
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import HEALTH_QNAME, ROUTER_ASN, SERVICE_V4, SERVICE_V6, Server, run

MOST = 64  # /30s in 192.0.2.0/24
CLIENT_V4, CLIENT_GATEWAY_V4 = "198.51.100.2/24", "198.51.100.1/24"
CLIENT_V6, CLIENT_GATEWAY_V6 = "2001:db8:ffff::2/64", "2001:db8:ffff::1/64"
SPREAD_TABLE = "acd_spread"
#: Source ports of the flows ``spread`` sends: distinct flows differ in source address or port.
PORTS = range(1024, 65536)
SOURCES = 4


def link(k: int) -> tuple[str, str, str, str]:
    """Server ``k``'s link: (router v4, server v4, router v6, server v6), as interface addresses."""
    if not 1 <= k <= MOST:
        raise ValueError(f"server {k}: this addressing takes 1 to {MOST} servers")
    base = 4 * (k - 1)
    return f"192.0.2.{base + 1}/30", f"192.0.2.{base + 2}/30", f"2001:db8:0:{k:x}::1/64", f"2001:db8:0:{k:x}::2/64"


def unbound_conf(k: int) -> str:
    """Server ``k``'s Unbound, as containerlab/s2/unbound.conf is for s2 (the namespace lab writes its own)."""
    _, v4, _, v6 = link(k)
    interfaces = [a.split("/")[0] for a in (v4, v6, SERVICE_V4, SERVICE_V6)]
    return daemons.unbound_text(interfaces, f"s{k}", "/etc/unbound")


def anycastd_yaml(k: int) -> str:
    """Server ``k``'s anycastd.yaml in the sidecar variant, as containerlab/s2/anycastd.yaml is for s2, without BFD."""
    router_v4, v4, router_v6, v6 = (a.split("/")[0] for a in link(k))
    neighbors = "".join(
        f"""
  - address: "{peer}"
    peer_asn: {ROUTER_ASN}
    local_address: "{local}"
    hold_time: 3
    gtsm: true"""
        for peer, local in ((router_v4, v4), (router_v6, v6))
    )
    return f"""# anycastd on s{k}, anycastd_lab.wide's sidecar variant (generated)
router_id: {v4}
local_asn: {ROUTER_ASN + k}
neighbors:{neighbors}
metrics:
  address: {v4}
  port: {daemons.METRICS_PORT}
services:
  dns:
    prefixes: [{SERVICE_V4}, {SERVICE_V6}]
    interface: lo
    failure_action: graceful-shutdown
    checks:
      - address: {v4}
        qname: {HEALTH_QNAME}
        qtype: TXT
        answer: healthy
"""


#: frr/bgp/frr.conf's lines that name one of its three servers (their sessions), and its ECMP width
_NEIGHBOR = re.compile(r"^ neighbor [0-9a-f.:]+ (remote-as \d+|peer-group DNS[46])\n", re.MULTILINE)
_WIDTH = re.compile(r"^  maximum-paths \d+$", re.MULTILINE)
_BFD = re.compile(r"^ neighbor DNS[46] bfd profile \S+\n", re.MULTILINE)


def frr_bgp_wide(files: list[Path]) -> str:
    """frr/bgp/frr.conf for the servers whose anycastd.yaml are ``files`` (named after their directories):
    their sessions instead of the three servers', their policy (`anycastd frr-policy`'s), ECMP over all of
    them, and no BFD."""
    conf = daemons.frr_bgp_config()
    servers = [frr_policy.ServerFile(f.parent.name, str(f), sidecar_config.load(f)) for f in files]
    conf = frr_policy.splice(conf, frr_policy.render(servers))
    sessions = "".join(
        f" neighbor {n.local_address} remote-as {server.config.local_asn}\n"
        f" neighbor {n.local_address} peer-group DNS{n.local_address.version}\n"
        for server in servers
        for n in server.config.neighbors
    )
    first = _NEIGHBOR.search(conf)
    if first is None or len(_WIDTH.findall(conf)) != 2 or len(_BFD.findall(conf)) != 2:
        raise ValueError("frr/bgp/frr.conf no longer has the lines anycastd_lab.wide rewrites")
    conf = conf[: first.start()] + sessions + _NEIGHBOR.sub("", conf[first.start() :])
    conf = _WIDTH.sub(f"  maximum-paths {max(16, len(files))}", conf)
    return _BFD.sub("", conf)


def wide_topology(directory: Path, n: int, sidecar: bool = False) -> Path:
    """Write the ``n``-server topology file and its servers' files into ``directory``; its path. With
    ``sidecar``, the BGP variant's: each server's anycastd.yaml too, and the router's frr.conf."""
    if not 1 <= n <= MOST:
        raise ValueError(f"{n} servers: this addressing takes 1 to {MOST}")
    router_exec = ["sysctl -p /etc/sysctl.d/90-anycastd-router.conf"]
    nodes: dict[str, dict[str, object]] = {}
    links = []
    for k in range(1, n + 1):
        router_v4, v4, router_v6, v6 = link(k)
        router_exec += [f"ip addr add {router_v4} dev s{k}", f"ip addr add {router_v6} dev s{k} nodad"]
        conf = directory / f"s{k}" / "unbound.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(unbound_conf(k))
        binds = [f"s{k}/unbound.conf:/etc/unbound/unbound.conf"]
        if sidecar:
            (conf.parent / "anycastd.yaml").write_text(anycastd_yaml(k))
            binds.append(f"s{k}/anycastd.yaml:/etc/anycastd/anycastd.yaml")
        nodes[f"s{k}"] = {
            "kind": "linux",
            "image": "anycastd-server:latest",
            "labels": {"anycastd.role": "server", "anycastd.resolver": "unbound"},
            "cmd": "start-server unbound",
            "binds": binds,
            "exec": [
                f"ip addr add {v4} dev eth1",
                f"ip addr add {v6} dev eth1 nodad",
                f"ip route add 198.51.100.0/24 via {router_v4.split('/')[0]}",
                f"ip -6 route add 2001:db8:ffff::/64 via {router_v6.split('/')[0]}",
                f"ip addr add {SERVICE_V4} dev lo",
                f"ip addr add {SERVICE_V6} dev lo",
            ],
        }
        links.append({"endpoints": [f"router:s{k}", f"s{k}:eth1"]})
    router_exec += [f"ip addr add {CLIENT_GATEWAY_V4} dev client", f"ip addr add {CLIENT_GATEWAY_V6} dev client nodad"]
    sysctl = clab.ROOT / "frr" / "sysctl.d" / "90-anycastd-router.conf"
    frr = clab.ROOT / "frr" / "static" / "frr.conf"
    if sidecar:
        frr = directory / "frr.conf"
        frr.write_text(frr_bgp_wide([directory / f"s{k}" / "anycastd.yaml" for k in range(1, n + 1)]))
    router = {
        "kind": "linux",
        "image": "anycastd-router:latest",
        "labels": {"anycastd.role": "router"},
        "binds": [f"{frr}:/etc/frr/frr.conf", f"{sysctl}:/etc/sysctl.d/90-anycastd-router.conf"],
        "exec": router_exec,
    }
    client = {
        "kind": "linux",
        "image": "anycastd-server:latest",
        "labels": {"anycastd.role": "client"},
        "exec": [
            f"ip addr add {CLIENT_V4} dev eth1",
            f"ip addr add {CLIENT_V6} dev eth1 nodad",
            "ip route add 192.0.2.0/24 via 198.51.100.1",
            "ip route add 203.0.113.0/24 via 198.51.100.1",
            "ip -6 route add 2001:db8::/48 via 2001:db8:ffff::1",
        ],
    }
    links.append({"endpoints": ["router:client", "client:eth1"]})
    variant = "sidecar" if sidecar else "router-side"
    text = yaml.safe_dump(
        {
            "name": f"anycast-dns-wide{n}{'-bgp' if sidecar else ''}",
            "topology": {"nodes": {"router": router, **nodes, "client": client}, "links": links},
        },
        sort_keys=False,
    )
    path = directory / f"anycast-dns-wide{n}.clab.yml"
    path.write_text(f"# anycastd_lab.wide: the {variant} variant with {n} servers (generated)\n{text}")
    return path


def equal_share(counts: dict[str, int]) -> tuple[float, float]:
    """The mean and standard deviation of one server's count of ``spread``'s flows under a uniform hash:
    Binomial(total, 1/N)."""
    total, p = sum(counts.values()), 1 / len(counts)
    return total * p, math.sqrt(total * p * (1 - p))


def deviations(counts: dict[str, int]) -> dict[str, float]:
    """Each server's distance from an equal share of ``spread``'s counted flows, in standard deviations."""
    mean, sigma = equal_share(counts)
    return {name: (c - mean) / sigma for name, c in counts.items()}


class _Wide(DnsLab):
    """What both wide labs share: their generated files (removed with the lab), the resolvers started all at
    once, and ``ready_in``, from ``_started`` (set by ``start_resolvers``) until every path is in the FIB."""

    def __init__(self, n: int, keep_dir: bool, sidecar: bool) -> None:
        self.files = Path(tempfile.mkdtemp(prefix="anycastd-wide-"))
        try:
            self.TOPOLOGY = wide_topology(self.files, n, sidecar)
            super().__init__(keep_dir)
        except BaseException:
            shutil.rmtree(self.files, ignore_errors=True)
            raise
        self.ready_in = 0.0
        self._started = 0.0

    def start_resolvers(self) -> None:
        """Every server's resolver started, then each waited for (64 start-ups overlap); the clock starts."""
        for s in self.servers:
            daemons.start_resolver(self.lab, s, wait=False)
        for s in self.servers:
            daemons.wait_resolver(self.lab, s)
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        super().__enter__()  # waits for every path, both families
        self.ready_in = time.monotonic() - self._started
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            super().__exit__(kind, exc, tb)
        finally:
            shutil.rmtree(self.files, ignore_errors=True)


class WideLab(_Wide, StaticLab):
    """StaticLab with ``n`` servers (at most 64). Use as a context manager; ``ready_in`` after entering.
    ``resync`` is `anycastd router`'s periodic read of FRR (the lab's 1 s, as StaticLab's, or its default 10 s)."""

    def __init__(self, n: int, keep_dir: bool = False, resync: float = 1.0) -> None:
        self.resync = resync
        super().__init__(n, keep_dir, sidecar=False)

    def start_daemons(self) -> None:
        daemons.start_frr(self.lab, self.frr_config(), self.FRR_DAEMONS)
        self.start_resolvers()
        self.start_anycastd()

    def start_anycastd(self, config: str | None = None) -> None:
        daemons.start_anycastd_router(self.lab, config or daemons.router_config(self.lab, resync=self.resync))

    def pids(self) -> dict[str, int]:
        """The lab's running processes: its own by key (``resolver-sK``, ``anycastd-router``), FRR's as
        ``frr DAEMON``."""
        pids = {key: proc.pid for key, proc in self.lab.processes.items() if proc.poll() is None}
        for daemon in self.FRR_DAEMONS:
            pid = self.frr_pid(daemon)
            if pid is not None:
                pids[f"frr {daemon}"] = pid
        return pids


def spread(lab: DnsLab, flows: int) -> dict[str, int]:
    """Send ``flows`` distinct UDP flows (one datagram each) from ``lab``'s client to the service address;
    how many its router forwarded to each server, by name, from a counter per server interface."""
    rules = "".join(
        f"add rule inet {SPREAD_TABLE} forward oifname {lab.router_link(s)} ip daddr {SERVICE_V4.split('/')[0]}"
        f' udp dport 53 counter comment "{s.name}"\n'
        for s in lab.servers
    )
    script = (
        f"add table inet {SPREAD_TABLE}\ndelete table inet {SPREAD_TABLE}\nadd table inet {SPREAD_TABLE}\n"
        f"add chain inet {SPREAD_TABLE} forward {{ type filter hook forward priority 0; policy accept; }}\n{rules}"
    )
    (lab.lab.workdir / "spread.nft").write_text(script)
    lab.lab.exec(lab.lab.router, "nft", "-f", str(lab.lab.workdir / "spread.nft"))
    try:
        code = f"from anycastd_lab.wide import send_flows; send_flows({flows})"
        lab.lab.exec(lab.lab.client, sys.executable, "-c", code)
        listing = json.loads(lab.lab.exec(lab.lab.router, "nft", "-j", "list", "table", "inet", SPREAD_TABLE).stdout)
    finally:
        lab.lab.exec(lab.lab.router, "nft", "delete", "table", "inet", SPREAD_TABLE, check=False)
    counts: dict[str, int] = {}
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule:
            packets = next((e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e), 0)
            counts[str(rule.get("comment"))] = int(packets)
    return counts


class WideBgpLab(_Wide, BgpLab):
    """BgpLab with ``n`` servers (at most 64), no BFD: anycastd, ExaBGP and Unbound on each, FRR's bgpd with
    one session per server and family. Use as a context manager; ``ready_in`` after entering."""

    FRR_DAEMONS: tuple[str, ...] = ("zebra", "bgpd")
    READY_TIMEOUT = 300.0  # 64 anycastd and 64 ExaBGP starting at once on a small machine

    def __init__(self, n: int, keep_dir: bool = False) -> None:
        super().__init__(n, keep_dir, sidecar=True)

    def frr_config(self) -> str:
        return (self.files / "frr.conf").read_text()

    def anycastd_config(self, server: Server) -> str:
        return daemons.anycastd_config(self.lab, server, bfd=None)

    def start_daemons(self) -> None:
        daemons.start_frr(self.lab, self.frr_config(), self.FRR_DAEMONS)
        self.start_resolvers()
        for s in self.servers:
            daemons.start_anycastd(self.lab, s, self.anycastd_config(s))

    def processes(self) -> dict[str, list[int]]:
        """The lab's processes by kind: each server's Unbound, anycastd, ExaBGP and ExaBGP's helper, FRR's
        daemons (``frr DAEMON``)."""
        out: dict[str, list[int]] = {}
        for s in self.servers:
            for pid, argv in self.lab.commands(s.name).items():
                out.setdefault(kind(argv), []).append(pid)
        for daemon in self.FRR_DAEMONS:
            frr = self.frr_pid(daemon)
            if frr is not None:
                out.setdefault(f"frr {daemon}", []).append(frr)
        return out


def kind(argv: list[bytes]) -> str:
    """What a server's process is, from its command line."""
    if any(arg.endswith(b"exabgp_helper.py") for arg in argv):
        return "ExaBGP's helper"
    if b"-m" in argv and (b"exabgp" in argv or b"anycastd.announce.exabgp_run" in argv):
        return "ExaBGP"
    if argv and argv[0].endswith(b"unbound"):
        return "Unbound"
    if b"anycastd" in argv or (argv and argv[0].endswith(b"/anycastd")):
        return "anycastd"
    return argv[0].rsplit(b"/", 1)[-1].decode(errors="replace") if argv else "?"


def send_flows(flows: int, address: str = SERVICE_V4.split("/")[0]) -> None:
    """``flows`` UDP datagrams to ``address`` port 53, each from its own (source address, source port), drawn at
    random from SOURCES addresses' ports: the kernel's multipath hash key is the same for the whole boot, so
    only fresh flows make each run a fresh sample. A raw socket writes the UDP header, so no socket is bound
    per flow. The payload is one byte, no DNS message, which a resolver drops unanswered."""
    base = ipaddress.ip_interface(CLIENT_V4).ip
    sources = [str(base)] + [str(base + 10 + i) for i in range(SOURCES - 1)]
    if flows > len(sources) * len(PORTS):
        raise ValueError(f"at most {len(sources) * len(PORTS)} flows")
    for added in sources[1:]:  # more source addresses on the client, for more flows than one address has ports
        run("ip", "addr", "add", f"{added}/32", "dev", "eth1", check=False)
    chosen = sorted(random.sample(range(len(sources) * len(PORTS)), flows))
    socks = {}
    try:
        for src in sources:
            socks[src] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
            socks[src].bind((src, 0))
        for sent, flow in enumerate(chosen):
            sock = socks[sources[flow // len(PORTS)]]
            header = struct.pack("!HHHH", PORTS[flow % len(PORTS)], 53, 9, 0)  # no checksum: optional over IPv4
            while True:
                try:
                    sock.sendto(header + b"x", (address, 0))
                    break
                except OSError as exc:  # ENOBUFS: the device's queue is full; wait for it
                    if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    time.sleep(0.001)
            if sent % 200 == 199:
                time.sleep(0.002)  # paced, so that the router's backlog drops nothing of a burst
    finally:
        for sock in socks.values():
            sock.close()
