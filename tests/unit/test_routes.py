"""The router-side decisions: parsing FRR's view, reconciling it, choosing the servers that carry a service."""

from __future__ import annotations

import ipaddress

import pytest

from anycastd.announce.frr import commands_for, no_route_command, parse_running_config, route_command
from anycastd.config.router import parse_router
from anycastd.core.routes import (
    Choice,
    Divergence,
    Installed,
    Selection,
    StaticRoute,
    desired_routes,
    reconcile,
    repair,
    routes_via,
    servers_routed,
)

TAG = 5353
CONFIG = parse_router("""\
services:
  dns:
    prefixes: [203.0.113.53/32, 2001:db8::53/128]
    servers:
      - {name: ns1, address: 192.0.2.2, nexthops: [192.0.2.2, "2001:db8:0:1::2"]}
      - {name: ns2, address: 192.0.2.10, nexthops: [192.0.2.10, "2001:db8:0:2::2"]}
      - {name: ns3, address: 192.0.2.18, nexthops: [192.0.2.18, "2001:db8:0:3::2"]}
""")
DNS = CONFIG.service("dns")


def route(prefix: str, nexthop: str) -> StaticRoute:
    return StaticRoute(ipaddress.ip_network(prefix), ipaddress.ip_address(nexthop))


V4_NS1 = route("203.0.113.53/32", "192.0.2.2")
V6_NS1 = route("2001:db8::53/128", "2001:db8:0:1::2")
V4_NS2 = route("203.0.113.53/32", "192.0.2.10")

RUNNING = """\
Building configuration...

Current configuration:
!
frr version 8.4.4
hostname r1
!
ip route 203.0.113.53/32 192.0.2.2 tag 5353
ipv6 route 2001:db8::53/128 2001:db8:0:1::2 tag 5353
ip route 198.51.100.0/24 192.0.2.9
ip route 198.51.100.0/25 Null0 tag 5353
ip route 203.0.113.53/32 192.0.2.10 10 tag 77
ip route 203.0.113.54/32 192.0.2.2 tag
!
vrf blue
 ip route 203.0.113.53/32 192.0.2.18 tag 5353
exit-vrf
!
end
"""


def test_parse_running_config_reads_default_vrf_gateway_routes_with_tags() -> None:
    assert parse_running_config(RUNNING) == [
        Installed(V4_NS1, TAG),
        Installed(V6_NS1, TAG),
        Installed(route("198.51.100.0/24", "192.0.2.9"), None),
        Installed(V4_NS2, 77),
        Installed(route("203.0.113.54/32", "192.0.2.2"), None),
    ]


def test_commands_are_frr_syntax() -> None:
    assert route_command(V4_NS1, TAG) == "ip route 203.0.113.53/32 192.0.2.2 tag 5353"
    assert no_route_command(V6_NS1, TAG) == "no ipv6 route 2001:db8::53/128 2001:db8:0:1::2 tag 5353"
    assert str(V4_NS1) == "203.0.113.53/32 via 192.0.2.2"


def test_routes_via_uses_each_servers_nexthop_of_the_prefix_family() -> None:
    assert routes_via(DNS, ["ns1"]) == {V4_NS1, V6_NS1}
    assert routes_via(DNS, ["ns1", "nope"]) == {V4_NS1, V6_NS1}
    assert servers_routed(DNS, [V4_NS1, V6_NS1, V4_NS2]) == {"ns1"}  # ns2 lacks its IPv6 route


def test_reconcile_adds_and_removes_only_its_own_routes() -> None:
    installed = [
        Installed(V4_NS1, TAG),
        Installed(route("203.0.113.99/32", "192.0.2.2"), TAG),  # owned, no longer configured
        Installed(route("198.51.100.0/24", "192.0.2.9"), None),  # the operator's
    ]
    change = reconcile(installed, {V4_NS1, V6_NS1, V4_NS2}, TAG)
    assert change.add == (V4_NS2, V6_NS1)  # IPv4 first
    assert change.remove == (route("203.0.113.99/32", "192.0.2.2"),)
    assert not change.conflicts
    assert commands_for(change, TAG)[0].startswith("no ip route 203.0.113.99/32")
    assert bool(change)


def test_a_wanted_route_the_operator_made_is_a_conflict_never_touched() -> None:
    installed = [Installed(V4_NS2, 77), Installed(V4_NS1, None)]
    change = reconcile(installed, {V4_NS1}, TAG)
    assert not change and change.conflicts == (V4_NS1,)
    assert commands_for(reconcile(installed, set(), TAG), TAG) == []


def test_nothing_to_do_is_false() -> None:
    assert not reconcile([Installed(V4_NS1, TAG)], {V4_NS1}, TAG)


# (healthy, drained, keep, expected servers, degraded?)
SELECTIONS = [
    ("the healthy servers carry it", ["ns1", "ns2"], [], True, {"ns1", "ns2"}, False),
    ("a drained server does not", ["ns1", "ns2"], ["ns2"], True, {"ns1"}, False),
    ("all failed: the last healthy set stays", [], [], True, {"ns1", "ns2", "ns3"}, True),
    ("all failed, one drained: the rest of the last set", [], ["ns3"], True, {"ns1", "ns2"}, True),
    ("all failed and all drained: nothing", [], ["ns1", "ns2", "ns3"], True, set(), True),
    ("withdraw policy: nothing", [], [], False, set(), True),
]


@pytest.mark.parametrize(
    ("healthy", "drained", "keep", "expected", "degraded"),
    [c[1:] for c in SELECTIONS],
    ids=[c[0] for c in SELECTIONS],
)
def test_selection(healthy: list[str], drained: list[str], keep: bool, expected: set[str], degraded: bool) -> None:
    selection = Selection("dns", keep)
    selection.choose(["ns1", "ns2", "ns3"], [], 0.0)
    choice = selection.choose(healthy, drained, 1.0)
    assert choice.servers == expected
    assert (choice.degraded is not None) is degraded


def test_selection_without_history_has_nothing_to_keep() -> None:
    choice = Selection("dns").choose([], [], 0.0)
    assert choice == Choice(frozenset(), "no server passes its probes: the service has no route")


def test_a_recovered_server_alone_replaces_the_kept_set() -> None:
    selection = Selection("dns")
    selection.hold(frozenset({"ns1", "ns2"}))  # what FRR held when anycastd started
    assert selection.choose([], [], 0.0).servers == {"ns1", "ns2"}
    assert selection.choose(["ns3"], [], 1.0) == Choice(frozenset({"ns3"}))
    assert selection.chosen == {"ns3"}


ALL = ["ns1", "ns2", "ns3"]


def test_servers_failing_within_a_round_of_each_other_keep_every_route() -> None:
    """A cause common to every server (a bad zone pushed everywhere): verdicts 50-80 ms apart are one event."""
    selection = Selection("dns", window=0.3)
    selection.choose(ALL, [], 10.0)
    assert selection.choose(["ns2", "ns3"], [], 10.05).servers == {"ns2", "ns3"}  # one failure: out at once
    assert selection.choose(["ns3"], [], 10.13).servers == {"ns3"}
    last = selection.choose([], [], 10.2)
    assert last.servers == set(ALL)
    assert last.degraded == "no server passes its probes; keeping the routes from before the failures began " + (
        "(ns1, ns2, ns3)"
    )
    assert selection.choose([], ["ns1"], 12.0).servers == {"ns2", "ns3"}  # a drain still takes its server out
    assert selection.choose(["ns2"], [], 15.0) == Choice(frozenset({"ns2"}))  # a recovered server alone


def test_a_cascade_is_a_chain_each_loss_within_a_round_of_the_one_before() -> None:
    selection = Selection("dns", window=0.3)
    selection.choose(ALL, [], 0.0)
    selection.choose(["ns2", "ns3"], [], 1.0)
    selection.choose(["ns3"], [], 1.25)
    assert selection.choose([], [], 1.5).servers == set(ALL)


def test_a_server_lost_long_after_the_others_is_kept_alone() -> None:
    """Servers that failed rounds ago were judged then; the last healthy one is what is kept."""
    selection = Selection("dns", window=0.3)
    selection.choose(ALL, [], 0.0)
    selection.choose(["ns3"], [], 1.0)  # ns1 and ns2 together: one cascade
    assert selection.choose([], [], 1.31).servers == {"ns3"}  # just over a round later: a cascade of its own


def test_the_withdraw_policy_keeps_nothing_even_after_a_cascade() -> None:
    selection = Selection("dns", keep_when_all_down=False, window=0.3)
    selection.choose(ALL, [], 0.0)
    assert selection.choose([], [], 0.1) == Choice(frozenset(), "no server passes its probes: the service has no route")


def test_desired_routes_keeps_an_undecided_service_as_it_is() -> None:
    owned = {V4_NS1, route("203.0.113.99/32", "192.0.2.2")}
    assert desired_routes([DNS], {"dns": None}, owned) == {V4_NS1}
    assert desired_routes([DNS], {"dns": Choice(frozenset({"ns2"}))}, owned) == routes_via(DNS, ["ns2"])


def gone(prefix: str, missing: list[str] = [], extra: list[str] = []) -> Divergence:  # noqa: B006 (read only)
    return Divergence(
        ipaddress.ip_network(prefix),
        frozenset(ipaddress.ip_address(a) for a in missing),
        frozenset(ipaddress.ip_address(a) for a in extra),
    )


@pytest.mark.parametrize(
    ("found", "re_added"),
    [
        ([gone("203.0.113.53/32", missing=["192.0.2.10"])], [V4_NS2]),  # the lost nexthop's own route
        ([gone("203.0.113.53/32", extra=["192.0.2.99"])], [V4_NS1]),  # any one of ours: the first
        ([gone("2001:db8::53/128", missing=["2001:db8:0:9::2"])], [V6_NS1]),  # not ours: one of ours instead
        ([gone("198.51.100.0/24", missing=["192.0.2.2"])], []),  # no route of ours to that prefix
    ],
)
def test_repair_re_adds_one_route_of_ours_per_divergent_prefix(
    found: list[Divergence], re_added: list[StaticRoute]
) -> None:
    change = repair(found, [V4_NS1, V4_NS2, V6_NS1])
    assert change.add == tuple(re_added) and change.remove == tuple(re_added)
    assert commands_for(change, TAG) == [no_route_command(r, TAG) for r in re_added] + [
        route_command(r, TAG) for r in re_added
    ]


# Named by the mutants of `make mutation` they kill (docs/architecture.md#mutation-testing).


def test_a_server_whose_routes_are_all_that_is_owned_is_routed() -> None:
    """servers_routed: a server's routes may be the whole owned set (subset, not strict subset)."""
    assert servers_routed(DNS, routes_via(DNS, ["ns1"])) == {"ns1"}


def test_several_conflicts_across_families_are_listed_in_order() -> None:
    """reconcile: conflicts are sorted with the family-aware key (routes themselves do not compare)."""
    foreign = [Installed(V6_NS1, None), Installed(V4_NS2, 77), Installed(V4_NS1, None)]
    change = reconcile(foreign, {V4_NS1, V4_NS2, V6_NS1}, TAG)
    assert change.conflicts == (V4_NS1, V4_NS2, V6_NS1)


def test_a_drained_last_set_is_said_to_leave_no_route() -> None:
    selection = Selection("dns", keep_when_all_down=True)
    selection.choose(["ns1"], [], 0.0)
    assert selection.choose([], ["ns1"], 1.0) == Choice(
        frozenset(), "every server of the last healthy set is drained: the service has no route"
    )


def test_desired_routes_gathers_every_service() -> None:
    """desired_routes: each service adds to what is wanted; none replaces another's."""
    two = parse_router("""\
services:
  a:
    prefixes: [203.0.113.53/32]
    servers: [{name: ns1, address: 192.0.2.2}]
  b:
    prefixes: [203.0.113.54/32]
    servers: [{name: ns1, address: 192.0.2.2}]
  c:
    prefixes: [203.0.113.55/32]
    servers: [{name: ns1, address: 192.0.2.2}]
""")
    held = {route("203.0.113.53/32", "192.0.2.2"), route("203.0.113.54/32", "192.0.2.2")}
    choices = {"a": None, "b": None, "c": Choice(frozenset({"ns1"}))}
    assert desired_routes(two.services, choices, held) == held | {route("203.0.113.55/32", "192.0.2.2")}
    choices = {"a": Choice(frozenset({"ns1"})), "b": Choice(frozenset({"ns1"})), "c": None}
    assert desired_routes(two.services, choices, set()) == held


def test_repair_bounces_a_route_for_every_divergent_prefix() -> None:
    mine = {V4_NS1, V6_NS1}
    found = [
        Divergence(V4_NS1.prefix, frozenset({V4_NS1.nexthop}), frozenset()),
        Divergence(V6_NS1.prefix, frozenset({V6_NS1.nexthop}), frozenset()),
    ]
    change = repair(found, mine)
    assert set(change.add) == set(change.remove) == mine


def test_a_loss_exactly_one_round_after_the_last_is_the_same_cascade() -> None:
    selection = Selection("dns", window=0.5)
    selection.choose(ALL, [], 0.0)
    selection.choose(["ns2", "ns3"], [], 1.0)
    selection.choose(["ns3"], [], 1.5)
    assert selection.choose([], [], 2.0).servers == set(ALL)


def test_a_divergence_names_every_address_it_concerns() -> None:
    a, b, c, d = (ipaddress.ip_address(f"192.0.2.{n}") for n in (2, 10, 18, 26))
    found = Divergence(ipaddress.ip_network("203.0.113.53/32"), frozenset({b, a}), frozenset({d, c}))
    assert str(found) == (
        "203.0.113.53/32: the kernel lacks 192.0.2.10, 192.0.2.2 and the kernel also forwards to 192.0.2.18, 192.0.2.26"
    )
