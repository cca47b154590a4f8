"""The FIB reader against this kernel: its lookups give what a dump of the main table gives, for routes
that are there, absent, shorter, in another table behind a policy rule, or a blackhole, and they spare the
dump when the route is the prefix's own."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import NetNS

from anycastd.core.net import IPNetwork
from anycastd.watch.fib import AF_INET, AF_INET6, MAIN_TABLE, read_weights, weights_in
from anycastd_lab.topology import NS_PREFIX, kill_namespace, run

V4, V6 = ipaddress.ip_network("203.0.113.53/32"), ipaddress.ip_network("2001:db8::53/128")
ABSENT = ipaddress.ip_network("203.0.113.54/32")  # only the default route covers it
SHORTER = ipaddress.ip_network("203.0.113.55/32")  # 203.0.113.0/24 covers it
RULED = ipaddress.ip_network("198.51.100.0/24")  # in main, and in table 100, which a rule puts first
BLACKHOLE = ipaddress.ip_network("203.0.113.60/32")
ALL = [V4, V6, ABSENT, SHORTER, RULED, BLACKHOLE]


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with both ends of two veths, and the routes above; removed after."""
    ns = f"{NS_PREFIX}{os.getpid()}-fibkernel"
    run("ip", "netns", "add", ns)
    try:
        ip = ["ip", "-n", ns]
        for k in (1, 2):
            run(*ip, "link", "add", f"a{k}", "type", "veth", "peer", "name", f"b{k}")
            for end in (f"a{k}", f"b{k}"):
                run(*ip, "link", "set", end, "up")
            run(*ip, "addr", "add", f"192.0.2.{4 * k - 3}/30", "dev", f"a{k}")
            run(*ip, "-6", "addr", "add", f"2001:db8:0:{k}::1/64", "dev", f"a{k}", "nodad")
        v4_hops = [
            "nexthop",
            "via",
            "192.0.2.2",
            "dev",
            "a1",
            "nexthop",
            "via",
            "192.0.2.6",
            "dev",
            "a2",
            "weight",
            "3",
        ]
        run(*ip, "route", "add", str(V4), *v4_hops)
        v6_hops = ["nexthop", "via", "2001:db8:0:1::2", "dev", "a1", "nexthop", "via", "2001:db8:0:2::2", "dev", "a2"]
        run(*ip, "-6", "route", "add", str(V6), *v6_hops)
        run(*ip, "route", "add", "default", "via", "192.0.2.2")
        run(*ip, "route", "add", "203.0.113.0/24", "via", "192.0.2.6")
        run(*ip, "route", "add", str(RULED), "via", "192.0.2.6")
        run(*ip, "route", "add", str(RULED), "via", "192.0.2.2", "table", "100")
        run(*ip, "rule", "add", "to", str(RULED), "lookup", "100", "pref", "100")
        run(*ip, "route", "add", "blackhole", str(BLACKHOLE))
        yield ns
    finally:
        kill_namespace(ns)


class Counting:
    """pyroute2's NetNS, counting the dumps asked of it."""

    def __init__(self, ipr: Any) -> None:
        self.ipr = ipr
        self.dumps = 0

    def route(self, command: str, **kw: Any) -> Any:
        self.dumps += command == "dump"
        return self.ipr.route(command, **kw)


def by_dump(ipr: Any, prefixes: list[IPNetwork]) -> dict[IPNetwork, dict[str, int]]:
    dumps = {f: list(ipr.route("dump", family=f, table=MAIN_TABLE)) for f in (AF_INET, AF_INET6)}
    return {
        p: {str(h): w for h, w in weights_in(dumps[AF_INET if p.version == 4 else AF_INET6], p).items()}
        for p in prefixes
    }


def test_lookups_give_what_the_main_table_holds_and_dump_only_when_needed(netns: str) -> None:
    with NetNS(netns) as ipr:
        counting = Counting(ipr)
        read = {p: {str(h): w for h, w in hops.items()} for p, hops in read_weights(counting, ALL).items()}
        assert read == by_dump(ipr, ALL)
        assert read[V4] == {"192.0.2.2": 1, "192.0.2.6": 3}
        assert read[V6] == {"2001:db8:0:1::2": 1, "2001:db8:0:2::2": 1}
        assert read[RULED] == {"192.0.2.6": 1}  # main's route, not table 100's, which the lookup reaches first
        assert read[ABSENT] == read[SHORTER] == read[BLACKHOLE] == {}
        assert counting.dumps == 1  # the IPv4 table, once, for the four the lookup could not settle

        counting.dumps = 0
        assert read_weights(counting, [V4, V6]) == read_weights(ipr, [V4, V6])
        assert counting.dumps == 0  # each its own route: no dump at all
