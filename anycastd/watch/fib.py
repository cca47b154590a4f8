"""What the kernel actually forwards on, read over netlink, and what zebra believes it installed.

Theory of operation
-------------------
zebra's word that a route is installed is not proof: FRR 8.4 was seen to
report a server's path installed while the kernel's ECMP route lacked it
(docs/reliability.md). So the router-side variant reads the kernel's FIB
back after every change and every periodic resync, compares it with what
zebra claims, and reports and repairs any difference. The comparison is
pure (``divergence``); this module's adapters only read.

A read asks the kernel for each prefix's own route: RTM_GETROUTE with
RTM_F_FIB_MATCH and RTM_F_LOOKUP_TABLE gives the route a lookup of the
prefix's address matches, whole, with every nexthop, and the table it is in.
It is taken when it is exactly the prefix, in the main table. Anything else
(no route, a shorter one, another table's behind a policy rule, an error)
falls back to a dump of the family's main table, which is the definition.
At 64 servers the router's main tables hold 65 IPv4 and 193 IPv6 routes, and
a read by dumps cost 33.5 ms of CPU, nearly all pyroute2 decoding them; a
read by lookups costs 4.1 ms (docs/benchmarks.md, `bench/ecmp.py --base`).

The lab reads the router's FIB with the same reader, from another namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from anycastd.core.net import IPAddress, IPNetwork
from anycastd.core.routes import Divergence
from anycastd.errors import AnnounceError

MAIN_TABLE = 254
AF_INET, AF_INET6 = 2, 10
#: linux/rtnetlink.h: return the FIB entry a lookup matched, not the route the lookup resolved to (Linux 4.13);
#: report the table the lookup found it in (IPv4 otherwise echoes the request's RTA_TABLE, which pyroute2
#: always sends); and the mark of a resolved route, which a kernel without RTM_F_FIB_MATCH returns instead.
RTM_F_FIB_MATCH, RTM_F_LOOKUP_TABLE, RTM_F_CLONED = 0x2000, 0x1000, 0x200
#: The flags of a lookup: the matched route, whole, with its own table.
LOOKUP = RTM_F_FIB_MATCH | RTM_F_LOOKUP_TABLE

Hops = dict[IPNetwork, frozenset[IPAddress]]


class FibError(AnnounceError):
    """The kernel's routing table could not be read."""


def weights_in(dump: Iterable[Any], prefix: IPNetwork) -> dict[IPAddress, int]:
    """Each gateway's weight in the main-table route for exactly ``prefix`` (RTA_MULTIPATH's rtnh_hops + 1;
    a route with one gateway weighs 1); empty when there is no such route."""
    for route in dump:
        if route["dst_len"] == prefix.prefixlen and route.get("dst") == str(prefix.network_address):
            return route_weights(route)
    return {}


def route_weights(route: Any) -> dict[IPAddress, int]:
    """One route's gateways and their weights (see ``weights_in``)."""
    multipath = route.get("multipath")
    if multipath:
        hops = [h for h in multipath if h.get("gateway")]
        return {ipaddress.ip_address(h.get("gateway")): int(h.get("hops", 0)) + 1 for h in hops}
    gateway = route.get("gateway")
    return {ipaddress.ip_address(gateway): 1} if gateway else {}


def read_weights(ipr: Any, prefixes: Iterable[IPNetwork]) -> dict[IPNetwork, dict[IPAddress, int]]:
    """Each prefix's gateways and weights in the main table, read over ``ipr`` (pyroute2's synchronous
    IPRoute or NetNS): a lookup per prefix, a dump of its family only when the lookup is not exactly
    that main-table route (see the module's docstring). pyroute2's errors pass through."""
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415 (netlink only where a kernel is read)

    out: dict[IPNetwork, dict[IPAddress, int]] = {}
    dumps: dict[int, list[Any]] = {}
    for prefix in prefixes:
        family = AF_INET if prefix.version == 4 else AF_INET6
        try:
            found = list(ipr.route("get", dst=str(prefix.network_address), family=family, flags=LOOKUP))
        except NetlinkError:
            found = []  # no route at all, or one that does not forward (unreachable, prohibit): the dump says
        if found and _exactly(found[0], prefix):
            out[prefix] = route_weights(found[0])
            continue
        if family not in dumps:
            dumps[family] = list(ipr.route("dump", family=family, table=MAIN_TABLE))
        out[prefix] = weights_in(dumps[family], prefix)
    return out


def _exactly(route: Any, prefix: IPNetwork) -> bool:
    """``route`` is the main table's route for exactly ``prefix`` (not a resolved route: one gateway of it)."""
    return bool(
        not route.get("flags", 0) & RTM_F_CLONED
        and route.get("table") == MAIN_TABLE
        and route["dst_len"] == prefix.prefixlen
        and route.get("dst") == str(prefix.network_address)
    )


class KernelFib(Protocol):
    def read(self, prefixes: Iterable[IPNetwork]) -> Hops:
        """The kernel's nexthops for each prefix (empty: no route)."""
        ...


class NetlinkFib:
    """The kernel of the namespace anycastd runs in, read with ``read_weights``.

    pyroute2's synchronous API runs an event loop of its own, so the caller runs
    ``read`` in a worker thread, and each read opens and closes its own socket.
    """

    def read(self, prefixes: Iterable[IPNetwork]) -> Hops:
        from pyroute2 import IPRoute  # noqa: PLC0415 (netlink only where a kernel is read)
        from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

        try:
            with IPRoute() as ipr:
                weights = read_weights(ipr, prefixes)
        except (OSError, NetlinkError) as exc:
            raise FibError(f"cannot read the kernel's routes: {exc}") from None
        return {prefix: frozenset(hops) for prefix, hops in weights.items()}


class InMemoryFib:
    """For tests: the kernel as a dict."""

    def __init__(self, hops: Mapping[IPNetwork, Iterable[IPAddress]] | None = None) -> None:
        self.hops: Hops = {p: frozenset(h) for p, h in (hops or {}).items()}
        self.broken: str | None = None

    def read(self, prefixes: Iterable[IPNetwork]) -> Hops:
        if self.broken:
            raise FibError(self.broken)
        return {p: self.hops.get(p, frozenset()) for p in prefixes}


def divergence(
    zebra: Mapping[IPNetwork, frozenset[IPAddress]], kernel: Mapping[IPNetwork, frozenset[IPAddress]]
) -> list[Divergence]:
    """Every prefix of ``zebra`` whose kernel nexthops differ from what zebra claims it installed."""
    out = []
    for prefix in sorted(zebra, key=lambda p: (p.version, int(p.network_address), p.prefixlen)):
        claimed, held = zebra[prefix], kernel.get(prefix, frozenset())
        if claimed != held:
            out.append(Divergence(prefix, claimed - held, held - claimed))
    return out
