"""The kernel-versus-zebra comparison and the readers' parsers (pure: no netlink, no vtysh)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from anycastd.announce.frr import RouteError, parse_zebra_routes
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.watch.fib import (
    AF_INET,
    MAIN_TABLE,
    RTM_F_CLONED,
    RTM_F_FIB_MATCH,
    RTM_F_LOOKUP_TABLE,
    divergence,
    read_weights,
    weights_in,
)

V4 = ipaddress.ip_network("203.0.113.53/32")
V6 = ipaddress.ip_network("2001:db8::53/128")
A, B, C = (ipaddress.ip_address(a) for a in ("192.0.2.10", "192.0.2.18", "192.0.2.26"))

Fib = dict[IPNetwork, frozenset[IPAddress]]


@pytest.mark.parametrize(
    ("zebra", "kernel", "expected"),
    [
        ({V4: frozenset({A, B})}, {V4: frozenset({A, B})}, []),
        ({V4: frozenset({A, B})}, {V4: frozenset({B})}, ["203.0.113.53/32: the kernel lacks 192.0.2.10"]),
        ({V4: frozenset({A})}, {V4: frozenset({A, C})}, ["203.0.113.53/32: the kernel also forwards to 192.0.2.26"]),
        (
            {V4: frozenset({A})},
            {V4: frozenset({C})},
            ["203.0.113.53/32: the kernel lacks 192.0.2.10 and the kernel also forwards to 192.0.2.26"],
        ),
        ({V4: frozenset(), V6: frozenset()}, {}, []),  # nothing claimed, nothing held
    ],
)
def test_divergence(zebra: Fib, kernel: Fib, expected: list[str]) -> None:
    assert [str(d) for d in divergence(zebra, kernel)] == expected


class FakeNetlink:
    """pyroute2's IPRoute as ``read_weights`` calls it: lookups answered from ``lookups`` (an exception
    is raised), dumps from ``tables``; every call recorded."""

    def __init__(self, lookups: dict[str, Any], tables: dict[int, list[dict[str, Any]]]) -> None:
        self.lookups = lookups
        self.tables = tables
        self.calls: list[tuple[str, int]] = []

    def route(self, command: str, *, family: int, **kw: Any) -> list[dict[str, Any]]:
        self.calls.append((command, family))
        if command == "dump":
            assert kw == {"table": MAIN_TABLE}
            return self.tables[family]
        assert command == "get" and kw["flags"] == RTM_F_FIB_MATCH | RTM_F_LOOKUP_TABLE
        found = self.lookups[kw["dst"]]
        if isinstance(found, Exception):
            raise found
        return [found]


MULTIPATH = {"multipath": [{"gateway": "192.0.2.10"}, {"gateway": "192.0.2.18", "hops": 2}]}


def test_a_lookup_that_matches_exactly_the_main_table_route_is_read_without_a_dump() -> None:
    v6 = {"dst_len": 128, "dst": "2001:db8::53", "table": MAIN_TABLE, "gateway": "2001:db8:0:1::2"}
    ipr = FakeNetlink(
        {"203.0.113.53": {"dst_len": 32, "dst": "203.0.113.53", "table": MAIN_TABLE, **MULTIPATH}, "2001:db8::53": v6},
        {},
    )
    assert read_weights(ipr, [V4, V6]) == {V4: {A: 1, B: 3}, V6: {ipaddress.ip_address("2001:db8:0:1::2"): 1}}
    assert ipr.calls == [("get", 2), ("get", 10)]


@pytest.mark.parametrize(
    "lookup",
    [
        NetlinkError(101, "Network is unreachable"),  # no route at all
        {"dst_len": 0, "dst": None, "table": MAIN_TABLE, "gateway": "192.0.2.1"},  # the default route
        {"dst_len": 24, "dst": "203.0.113.0", "table": MAIN_TABLE, "gateway": "192.0.2.1"},  # a shorter prefix
        {"dst_len": 32, "dst": "203.0.113.53", "table": 100, "gateway": "192.0.2.1"},  # a policy rule's table
        # a resolved route, one gateway of the ECMP route: what a kernel without RTM_F_FIB_MATCH returns
        {"dst_len": 32, "dst": "203.0.113.53", "table": MAIN_TABLE, "gateway": "192.0.2.10", "flags": RTM_F_CLONED},
    ],
)
def test_a_lookup_that_is_not_exactly_the_main_table_route_falls_back_to_one_dump(lookup: Any) -> None:
    dump = [{"dst_len": 24, "dst": "203.0.113.0"}, {"dst_len": 32, "dst": "203.0.113.53", **MULTIPATH}]
    ipr = FakeNetlink({"203.0.113.53": lookup, "203.0.113.54": lookup}, {AF_INET: dump})
    other = ipaddress.ip_network("203.0.113.54/32")
    assert read_weights(ipr, [V4, other]) == {V4: {A: 1, B: 3}, other: {}}
    assert ipr.calls == [("get", 2), ("dump", 2), ("get", 2)]  # one dump per family, however many prefixes


def test_weights_from_a_netlink_dump_are_hops_plus_one() -> None:
    hops = [{"gateway": "192.0.2.10", "hops": 15}, {"gateway": "192.0.2.18", "hops": 49}, {"hops": 0}]
    dump = [{"dst_len": 24, "dst": "203.0.113.0"}, {"dst_len": 32, "dst": "203.0.113.53", "multipath": hops}]
    assert weights_in(dump, V4) == {A: 16, B: 50}
    assert weights_in([{"dst_len": 32, "dst": "203.0.113.53", "gateway": "192.0.2.26"}], V4) == {C: 1}
    assert weights_in([{"dst_len": 32, "dst": "203.0.113.53"}], V4) == {}
    assert weights_in(dump, ipaddress.ip_network("203.0.113.54/32")) == {}
    bare = [{"dst_len": 32, "dst": "203.0.113.53", "multipath": [{"gateway": "192.0.2.10"}]}]
    assert weights_in(bare, V4) == {A: 1}  # a nexthop without rtnh_hops weighs 1


def zebra_json(prefix: str, hops: list[tuple[str, bool]], selected: bool = True) -> str:
    entry = {
        "prefix": prefix,
        "protocol": "static",
        "selected": selected,
        "installed": selected,
        "nexthops": [{"ip": ip, "fib": fib, "active": True} for ip, fib in hops],
    }
    return json.dumps({prefix: [entry]}, indent=2)


def test_zebra_route_json_one_object_per_prefix_only_fib_nexthops_of_the_selected_route() -> None:
    text = zebra_json(str(V4), [("192.0.2.10", True), ("192.0.2.18", False)]) + "\n{}\n"
    assert parse_zebra_routes(text, [V4, V6]) == {V4: {A}, V6: frozenset()}
    assert parse_zebra_routes(zebra_json(str(V4), [("192.0.2.10", True)], selected=False), [V4]) == {V4: frozenset()}


def test_zebra_route_json_that_is_not_json_is_an_error_naming_the_text() -> None:
    with pytest.raises(RouteError, match="zebra's route JSON could not be read near: '% Unknown command"):
        parse_zebra_routes("% Unknown command", [V4])
