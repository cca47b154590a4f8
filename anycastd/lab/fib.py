"""What the router's kernel actually forwards on: its FIB, read with pyroute2.

FRR installs ECMP routes as nexthop objects; with the kernel's
``nexthop_compat_mode`` (on by default) route dumps also carry the classic
RTA_GATEWAY / RTA_MULTIPATH attributes, which is what is read here.
"""

from __future__ import annotations

import ipaddress
from types import TracebackType

from pyroute2 import NetNS

MAIN_TABLE = 254


class Fib:
    """An open netlink socket in one namespace; cheap to poll (about 1 ms a read)."""

    def __init__(self, netns: str) -> None:
        self._ipr = NetNS(netns)

    def __enter__(self) -> Fib:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ipr.close()

    def nexthops(self, prefix: str) -> frozenset[str]:
        """The gateways the kernel holds for exactly ``prefix`` in the main table."""
        net = ipaddress.ip_network(prefix)
        family = 2 if net.version == 4 else 10
        for route in self._ipr.route("dump", family=family, table=MAIN_TABLE):
            if route["dst_len"] != net.prefixlen or route.get("dst") != str(net.network_address):
                continue
            multipath = route.get("multipath")
            if multipath:
                return frozenset(str(hop.get("gateway")) for hop in multipath if hop.get("gateway"))
            gateway = route.get("gateway")
            return frozenset({str(gateway)}) if gateway else frozenset()
        return frozenset()
