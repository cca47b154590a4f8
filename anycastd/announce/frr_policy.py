"""The router's import policy, generated from the servers' own anycastd configurations.

Theory of operation
-------------------
A server may announce only the service addresses it serves. The router knows
that only if someone tells it, and a hand-kept list drifts from the servers'
files. So ``anycastd frr-policy NAME=FILE ...`` reads each server's
anycastd.yaml (the same loader, the same validation as the daemon) and
writes FRR's policy for all of them:

* one prefix list per server and family, permitting exactly that server's
  service prefixes (``ip prefix-list FROM-s1-V4 seq 10 permit 203.0.113.53/32``);
* one route map per family (``FROM-DNS-V4``, the name the reference router
  applies to its server peer group), with one entry per server that matches
  the server's session address (``match peer``, the ``local_address`` of the
  server's neighbor entry) *and* its prefix list. Anything else falls through
  to the route map's implicit deny: another server's address, an address in
  no service, a default route;
* before those, an entry that honours GRACEFUL_SHUTDOWN (RFC 8326): a path
  tagged 65535:0 (a failing server's, with ``failure_action:
  graceful-shutdown``) gets local preference 0 and goes on (``on-match
  next``) to the server entries, which still decide whether it is accepted.
  Such a path is used only while no untagged path is left: the service
  degrades instead of vanishing when every server fails at once.

Every word goes through ``anycastd.core.syntax.vtysh_word``: server names are
checked against a strict grammar and everything else is a typed address or
prefix, so nothing from a file can add a line of its own. The output is a
block between two marker lines; frr/bgp/frr.conf holds the block generated
from containerlab/s*/anycastd.yaml, and a test regenerates it and compares.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from anycastd.config.sidecar import Config
from anycastd.core.health import GRACEFUL_SHUTDOWN
from anycastd.core.syntax import vtysh_command

BEGIN = "! BEGIN anycastd frr-policy: generated, do not edit (anycastd frr-policy NAME=FILE ...)"
END = "! END anycastd frr-policy"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")
ROUTE_MAPS = {4: "FROM-DNS-V4", 6: "FROM-DNS-V6"}
GSHUT_LIST = "GSHUT"


@dataclass(frozen=True)
class ServerFile:
    name: str  # the server's short name, used in the prefix lists' names
    source: str  # the file it came from, for the header
    config: Config


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"server name {name!r}: 1 to 32 letters, digits, '_' or '-', starting with a letter or digit")
    return name


def render(servers: Sequence[ServerFile]) -> str:
    """The policy block for ``servers``; ValueError if two servers share a name or a session address."""
    names = [check_name(s.name) for s in servers]
    if len(set(names)) != len(names):
        raise ValueError("each server needs its own name")
    lines = [BEGIN, "! from: " + " ".join(f"{s.name}" for s in servers)]
    entries: dict[int, list[tuple[str, str, str]]] = {4: [], 6: []}  # family -> (server, peer, list)
    seen_peers: dict[str, str] = {}
    for server in servers:
        for family in (4, 6):
            prefixes = sorted(
                {p for s in server.config.services for p in s.prefixes if p.version == family},
                key=lambda p: (int(p.network_address), p.prefixlen),
            )
            peers = [n.local_address for n in server.config.neighbors if n.address.version == family]
            if not prefixes or not peers:
                continue
            plist = f"FROM-{server.name}-V{family}"
            keyword = "ip" if family == 4 else "ipv6"
            for seq, prefix in enumerate(prefixes, start=1):
                lines.append(vtysh_command(keyword, "prefix-list", plist, "seq", seq * 10, "permit", prefix))
            for peer in sorted({str(p) for p in peers}):
                if peer in seen_peers:
                    raise ValueError(f"{server.name} and {seen_peers[peer]} both have the session address {peer}")
                seen_peers[peer] = server.name
                entries[family].append((server.name, peer, plist))
    if entries[4] or entries[6]:
        lines += [
            "! RFC 8326: a path tagged GRACEFUL_SHUTDOWN gets local preference 0, so it is used only while",
            "! no untagged path is left; the server entries below still decide whether it is accepted",
            vtysh_command("bgp", "community-list", "standard", GSHUT_LIST, "seq", 5, "permit", GRACEFUL_SHUTDOWN),
        ]
    for family, route_map in ROUTE_MAPS.items():
        keyword = "ip" if family == 4 else "ipv6"
        if entries[family]:
            lines += [
                vtysh_command("route-map", route_map, "permit", 5),
                " " + vtysh_command("match", "community", GSHUT_LIST),
                " " + vtysh_command("set", "local-preference", 0),
                " " + vtysh_command("on-match", "next"),
                "exit",
            ]
        for seq, (name, peer, plist) in enumerate(entries[family], start=1):
            lines += [
                f"! {name}: only its own service prefixes",
                vtysh_command("route-map", route_map, "permit", seq * 10),
                " " + vtysh_command("match", "peer", peer),
                " " + vtysh_command("match", keyword, "address", "prefix-list", plist),
                "exit",
            ]
        if not entries[family]:
            lines += [vtysh_command("route-map", route_map, "deny", 10), "exit"]
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(conf: str, block: str) -> str:
    """``conf`` with its policy block replaced by ``block``; ValueError if it has no (or a broken) block."""
    start, end = conf.find(BEGIN), conf.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no policy block: the file needs the lines {BEGIN!r} and {END!r}")
    return conf[:start] + block + conf[end + len(END) + 1 :]


def extract(conf: str) -> str:
    start, end = conf.find(BEGIN), conf.find(END)
    if start < 0 or end < start:
        raise ValueError("no policy block")
    return conf[start : end + len(END) + 1]
