"""containerlab topology files: read, validate, and describe them for the namespace lab.

Theory of operation
-------------------
``containerlab/*.clab.yml`` is the one description of the reference topology.
Operators with Docker deploy it with containerlab; this machine has no Docker,
so the namespace lab (``topology.Lab``) builds the same nodes, links and
addresses from the same file: a namespace per node, a veth per link, and each
node's ``exec`` lines run inside its namespace. That is why ``exec`` may hold
only what the lab can run identically: ``ip addr add``, ``ip route add`` and
``sysctl -p`` of a bound file. Which node is the router, a server (and which
resolver it runs) or the client is said with containerlab labels
(``anycastd.role``, ``anycastd.resolver``).

``load`` checks everything a deploy would trip over, and more: kinds, images,
binds pointing at files that exist, links naming existing nodes and valid
interfaces, addresses on interfaces the node has, gateways on a connected
subnet. Every problem is reported at once, each with its key path.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from anycastd.errors import AnycastdError

ROOT = Path(__file__).resolve().parents[1]
CONTAINERLAB = ROOT / "containerlab"
BGP_TOPOLOGY = CONTAINERLAB / "anycast-dns.clab.yml"
POP_TOPOLOGY = CONTAINERLAB / "anycast-pop.clab.yml"
STATIC_TOPOLOGY = CONTAINERLAB / "anycast-dns-static.clab.yml"

KINDS = {"linux"}  # what these topologies use; containerlab has more, none of which we need
ROLES = ("router", "server", "client")
RESOLVER_CONFIGS = {"bind": "/etc/bind/named.conf", "unbound": "/etc/unbound/unbound.conf"}
ANYCASTD_CONFIG = "/etc/anycastd/anycastd.yaml"
ANYCASTD_ROUTER_CONFIG = "/etc/anycastd/anycastd-router.yaml"
MANAGEMENT_INTERFACE = "eth0"  # containerlab's, in every container: links use eth1 and up
TOP_KEYS = {"name", "prefix", "mgmt", "settings", "topology"}
NODE_KEYS = {"kind", "image", "labels", "binds", "exec", "cmd", "env", "ports", "group", "startup-config"}
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TopologyError(AnycastdError):
    """The topology file is invalid."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Bind:
    source: Path  # on the host, resolved against the topology file's directory
    target: str  # in the container


@dataclass(frozen=True)
class Address:
    interface: str
    value: IPInterface


@dataclass(frozen=True)
class Route:
    prefix: IPNetwork
    gateways: tuple[IPAddress, ...]  # one, or several for an ECMP route (``nexthop via A nexthop via B``)


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str
    role: str
    resolver: str | None
    binds: tuple[Bind, ...]
    exec: tuple[str, ...]
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]

    def bound(self, target: str) -> Path | None:
        """The host file bound at ``target`` in the container, if any."""
        return next((b.source for b in self.binds if b.target == target), None)

    def commands(self) -> list[list[str]]:
        """The exec lines as argv, with each bound container path replaced by the host file."""
        by_target = {b.target: str(b.source) for b in self.binds}
        return [[by_target.get(word, word) for word in shlex.split(line)] for line in self.exec]

    def on(self, interface: str, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address of family ``version`` on ``interface``; the topology was validated to have it."""
        return next(a.value for a in self.addresses if a.interface == interface and a.value.version == version)


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str
    path: Path
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def _role(self, role: str) -> list[Node]:
        return [n for n in self.nodes if n.role == role]

    @property
    def routers(self) -> list[Node]:
        return self._role("router")

    @property
    def router(self) -> Node:
        """The router the client is linked to: the only one, or the edge of a POP."""
        return self.node(self.uplink(self.client.name)[1].node)

    @property
    def client(self) -> Node:
        return self._role("client")[0]

    @property
    def servers(self) -> list[Node]:
        return self._role("server")

    def uplinks(self, node: str) -> list[tuple[Endpoint, Endpoint]]:
        """(``node``'s end, the other end) of each of ``node``'s links, in the file's order."""
        return [
            (mine, theirs)
            for link in self.links
            for mine, theirs in ((link.a, link.b), (link.b, link.a))
            if mine.node == node
        ]

    def uplink(self, node: str) -> tuple[Endpoint, Endpoint]:
        """(``node``'s end, the router's end) of ``node``'s first link: its only one, or its first ToR's."""
        found = self.uplinks(node)
        if not found:
            raise KeyError(node)
        return found[0]

    def uplink_addresses(self, node: str, version: int) -> tuple[IPInterface, IPInterface]:
        """(``node``'s address, the router's address) of family ``version`` on their link."""
        mine, routers = self.uplink(node)
        return self.node(node).on(mine.interface, version), self.node(routers.node).on(routers.interface, version)


# parsing ------------------------------------------------------------------------------------------------


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{self.source}: {path}: {message}")


def _exec_line(p: _Problems, where: str, line: object, targets: set[str]) -> Address | Route | None:
    """Parse one exec line the lab can reproduce; report anything else."""
    if not isinstance(line, str):
        p.add(where, f"must be a command line (a string), got {type(line).__name__}")
        return None
    words = shlex.split(line)
    family = None
    if words[:2] in (["ip", "-4"], ["ip", "-6"]):
        family = words.pop(1)
    try:
        if words[:3] == ["ip", "addr", "add"] and len(words) in (6, 7) and words[4] == "dev":
            if words[6:] not in ([], ["nodad"]):
                raise ValueError(f"unexpected {words[6]!r} after the interface")
            value = ipaddress.ip_interface(words[3])
            if "/" not in words[3]:
                raise ValueError(f"{words[3]} needs a prefix length")
            _family_matches(family, value.version)
            return Address(words[5], value)
        hops = words[4:]
        triples = [hops[i : i + 3] for i in range(0, len(hops), 3)]
        multipath = len(triples) >= 2 and all(len(t) == 3 and t[:2] == ["nexthop", "via"] for t in triples)
        if (
            words[:3] == ["ip", "route", "add"]
            and len(words) >= 6
            and ((hops[:1] == ["via"] and len(hops) == 2) or multipath)
        ):
            prefix = ipaddress.ip_network(words[3])
            gateways = tuple(ipaddress.ip_address(w) for w in (hops[2::3] if multipath else hops[1:2]))
            _family_matches(family, prefix.version)
            for via in gateways:
                if via.version != prefix.version:
                    raise ValueError(f"gateway {via} is not of the same family as {prefix}")
            return Route(prefix, gateways)
        if words[:2] == ["sysctl", "-p"] and len(words) == 3 and family is None:
            if words[2] not in targets:
                raise ValueError(f"{words[2]} is not bound into the container (add it to binds)")
            return None
    except ValueError as exc:
        p.add(where, f"{line!r}: {exc}")
        return None
    p.add(
        where,
        f"{line!r}: the namespace lab runs only 'ip addr add ADDRESS/LEN dev IF [nodad]', "
        "'ip [-6] route add PREFIX via GATEWAY', 'ip [-6] route add PREFIX nexthop via GATEWAY nexthop via "
        "GATEWAY ...' and 'sysctl -p BOUND_FILE'",
    )
    return None


def _family_matches(flag: str | None, version: int) -> None:
    if flag is not None and flag != f"-{version}":
        raise ValueError(f"{flag} given for an IPv{version} address")


def _binds(p: _Problems, where: str, raw: object, base: Path) -> list[Bind]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        p.add(where, "must be a list of 'host-file:container-path[:ro]'")
        return []
    binds: list[Bind] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        parts = item.split(":") if isinstance(item, str) else []
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            p.add(at, f"must be 'host-file:container-path[:ro|rw]', got {item!r}")
            continue
        source, target = base / parts[0], parts[1]
        if not source.is_file():
            p.add(at, f"{parts[0]} does not exist (looked for {source})")
        if not target.startswith("/"):
            p.add(at, f"the container path {target!r} must be absolute")
        if target in {b.target for b in binds}:
            p.add(at, f"{target} is bound twice")
        binds.append(Bind(source.resolve(), target))
    return binds


def _node(p: _Problems, name: str, raw: object, base: Path) -> Node | None:
    where = f"topology.nodes.{name}"
    if not isinstance(raw, dict):
        p.add(where, "must be a mapping of node settings")
        return None
    for key in sorted(set(raw) - NODE_KEYS):
        p.add(f"{where}.{key}", f"unknown node key (known here: {', '.join(sorted(NODE_KEYS))})")
    kind = raw.get("kind")
    if kind not in KINDS:
        p.add(f"{where}.kind", f"must be one of {', '.join(sorted(KINDS))}, got {kind!r}")
    image = raw.get("image")
    if not isinstance(image, str) or not re.fullmatch(r"[a-z0-9][\w./-]*(:[\w.-]+|@sha256:[0-9a-f]{64})", image):
        p.add(f"{where}.image", f"must be an image with a tag, like 'quay.io/frrouting/frr:9.1.0', got {image!r}")
    labels = raw.get("labels") or {}
    role = labels.get("anycastd.role") if isinstance(labels, dict) else None
    if role not in ROLES:
        p.add(f"{where}.labels", f"anycastd.role must be one of {', '.join(ROLES)}, got {role!r}")
    binds = _binds(p, f"{where}.binds", raw.get("binds"), base)
    resolver = labels.get("anycastd.resolver") if isinstance(labels, dict) else None
    if role == "server":
        if resolver not in RESOLVER_CONFIGS:
            known = ", ".join(RESOLVER_CONFIGS)
            p.add(f"{where}.labels", f"anycastd.resolver must be one of {known}, got {resolver!r}")
        elif (needed := RESOLVER_CONFIGS[resolver]) not in {b.target for b in binds}:
            p.add(f"{where}.binds", f"a {resolver} server needs its configuration bound at {needed}")
    elif resolver is not None:
        p.add(f"{where}.labels", f"anycastd.resolver is for servers; this node is the {role}")
    lines = raw.get("exec") or []
    if not isinstance(lines, list):
        p.add(f"{where}.exec", "must be a list of command lines")
        lines = []
    targets = {b.target for b in binds}
    parsed = [_exec_line(p, f"{where}.exec[{i}]", line, targets) for i, line in enumerate(lines)]
    if None in (kind, image) or role not in ROLES:
        return None
    return Node(
        name,
        str(kind),
        str(image),
        str(role),
        resolver if role == "server" else None,
        tuple(binds),
        tuple(str(line) for line in lines),
        tuple(x for x in parsed if isinstance(x, Address)),
        tuple(x for x in parsed if isinstance(x, Route)),
    )


def _endpoint(p: _Problems, where: str, raw: object, nodes: dict[str, Node]) -> Endpoint | None:
    node, sep, interface = raw.partition(":") if isinstance(raw, str) else ("", "", "")
    if not sep:
        p.add(where, f"must be 'node:interface', got {raw!r}")
        return None
    if node not in nodes:
        p.add(where, f"no node {node!r} (nodes: {', '.join(nodes)})")
        return None
    if not IFNAME.match(interface) or interface in (MANAGEMENT_INTERFACE, "lo"):
        p.add(where, f"{interface!r} is not a usable interface name (1-15 characters; not eth0 or lo)")
        return None
    return Endpoint(node, interface)


def _links(p: _Problems, raw: object, nodes: dict[str, Node]) -> list[Link]:
    if not isinstance(raw, list) or not raw:
        p.add("topology.links", "must be a non-empty list of {endpoints: [node:if, node:if]}")
        return []
    links: list[Link] = []
    seen: set[Endpoint] = set()
    for i, item in enumerate(raw):
        where = f"topology.links[{i}]"
        ends = item.get("endpoints") if isinstance(item, dict) else None
        if not isinstance(ends, list) or len(ends) != 2:
            p.add(where, "must be {endpoints: [node:interface, node:interface]}")
            continue
        a, b = (_endpoint(p, f"{where}.endpoints[{j}]", e, nodes) for j, e in enumerate(ends))
        if a is None or b is None:
            continue
        for end in (a, b):
            if end in seen:
                p.add(where, f"{end.node}:{end.interface} is used by two links")
            seen.add(end)
        roles = sorted((nodes[a.node].role, nodes[b.node].role))
        if "router" not in roles:
            p.add(where, f"every link has a router at one end at least; this one joins {a.node} and {b.node}")
            continue
        links.append(Link(a, b))
    return links


def _addressing(p: _Problems, topology: Topology) -> None:
    """Addresses on interfaces each node has, both families on every link end, gateways reachable."""
    for node in topology.nodes:
        where = f"topology.nodes.{node.name}.exec"
        interfaces = {e.interface for link in topology.links for e in (link.a, link.b) if e.node == node.name}
        for address in node.addresses:
            if address.interface not in interfaces | {"lo"}:
                p.add(where, f"{address.value} is on {address.interface}, which is neither lo nor one of its links")
        for route in node.routes:
            for via in route.gateways:
                if not any(via in a.value.network for a in node.addresses if a.interface != "lo"):
                    p.add(where, f"the gateway {via} of {route.prefix} is on none of its links' subnets")
    for link in topology.links:
        for version in (4, 6):
            ends = []
            for end in (link.a, link.b):
                found = [
                    a.value
                    for a in topology.node(end.node).addresses
                    if a.interface == end.interface and a.value.version == version
                ]
                if len(found) != 1:
                    p.add(
                        f"topology.nodes.{end.node}.exec",
                        f"{end.interface} needs exactly one IPv{version} address, has {len(found)}",
                    )
                ends += found
            if len(ends) == 2 and (ends[0].network != ends[1].network or ends[0].ip == ends[1].ip):
                p.add(
                    f"topology.nodes.{link.b.node}.exec",
                    f"{link.a.node}:{link.a.interface} ({ends[0]}) and {link.b.node}:{link.b.interface} "
                    f"({ends[1]}) must be different addresses on one subnet",
                )


def parse(text: str, path: Path) -> Topology:
    p = _Problems(str(path))
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise TopologyError([f"{path}: must be a mapping with name and topology"])
    for key in sorted(set(raw) - TOP_KEYS):
        p.add(key, f"unknown top-level key (known: {', '.join(sorted(TOP_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        p.add("name", "the lab needs a name")
    body = raw.get("topology")
    body = body if isinstance(body, dict) else {}
    raw_nodes = body.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        p.add("topology.nodes", "must be a non-empty mapping of node name to settings")
        raw_nodes = {}
    nodes = {}
    for node_name, node_raw in raw_nodes.items():
        node = _node(p, str(node_name), node_raw, path.parent)
        if node is not None:
            nodes[node.name] = node
    for role, wanted in (("router", "at least one"), ("client", "exactly one"), ("server", "at least one")):
        count = sum(n.role == role for n in nodes.values())
        if count == 0 or (wanted == "exactly one" and count > 1):
            p.add("topology.nodes", f"needs {wanted} node labelled anycastd.role: {role}, has {count}")
    links = _links(p, body.get("links"), nodes)
    topology = Topology(str(name), path, tuple(nodes.values()), tuple(links))
    for node in topology.nodes:
        count = sum(node.name in (lk.a.node, lk.b.node) for lk in links)
        if node.role == "client" and count != 1:
            p.add(f"topology.nodes.{node.name}", "needs exactly one link, to a router")
        elif node.role == "server" and count not in (1, 2):
            p.add(f"topology.nodes.{node.name}", "needs one link to a router, or two (dual-homed to two ToRs)")
    if not p.items:
        _addressing(p, topology)
    if p.items:
        raise TopologyError(p.items)
    return topology


def load(path: Path) -> Topology:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse(text, path)
