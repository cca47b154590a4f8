"""What the kernel actually forwards on, read over netlink, and what zebra believes it installed.

Theory of operation
-------------------
zebra's word that a route is installed is not proof: FRR 8.4 was seen to
report a server's path installed while the kernel's ECMP route lacked it
(docs/reliability.md). So the router-side variant reads the kernel's FIB
back after every change and every periodic resync, compares it with what
zebra claims, and reports and repairs any difference. The comparison is
pure (``divergence``); this module's adapters only read.

The lab reads the router's FIB with the same parser, from another namespace.
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

Hops = dict[IPNetwork, frozenset[IPAddress]]


class FibError(AnnounceError):
    """The kernel's routing table could not be read."""


def nexthops_in(dump: Iterable[Any], prefix: IPNetwork) -> frozenset[IPAddress]:
    """The gateways of the main-table route for exactly ``prefix`` in a netlink route dump."""
    return frozenset(weights_in(dump, prefix))


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


class KernelFib(Protocol):
    def read(self, prefixes: Iterable[IPNetwork]) -> Hops:
        """The kernel's nexthops for each prefix (empty: no route)."""
        ...


class NetlinkFib:
    """The kernel of the namespace anycastd runs in: one netlink dump per family.

    pyroute2's synchronous API runs an event loop of its own, so the caller runs
    ``read`` in a worker thread, and each read opens and closes its own socket.
    """

    def read(self, prefixes: Iterable[IPNetwork]) -> Hops:
        from pyroute2 import IPRoute  # noqa: PLC0415 (netlink only where a kernel is read)
        from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

        wanted = list(prefixes)
        out: Hops = {}
        try:
            with IPRoute() as ipr:
                for family, version in ((AF_INET, 4), (AF_INET6, 6)):
                    mine = [p for p in wanted if p.version == version]
                    if mine:
                        dump = list(ipr.route("dump", family=family, table=MAIN_TABLE))
                        out.update({p: nexthops_in(dump, p) for p in mine})
        except (OSError, NetlinkError) as exc:
            raise FibError(f"cannot read the kernel's routes: {exc}") from None
        return out


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
