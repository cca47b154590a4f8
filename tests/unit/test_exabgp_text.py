"""ExaBGP's text protocol, pure: the commands from (sent, desired), holds, events; and the child's state table."""

from __future__ import annotations

import ipaddress

import pytest

from anycastd.announce.exabgp_text import (
    MAX_NLRI,
    Ack,
    SessionEvent,
    batch_commands,
    batched,
    hold_commands,
    parse_event,
    route_changes,
)
from anycastd.core.attributes import PLAIN, RouteAttributes
from anycastd.core.supervision import TRANSITIONS, ChildState, IllegalTransition, may, moved

P4 = ipaddress.ip_network("203.0.113.53/32")
Q4 = ipaddress.ip_network("203.0.113.54/32")
P6 = ipaddress.ip_network("2001:db8::53/128")
N4 = ipaddress.ip_address("192.0.2.9")
M4 = ipaddress.ip_address("192.0.2.17")
N6 = ipaddress.ip_address("2001:db8:0:1::1")
TAGGED = RouteAttributes(communities=("65535:0",))


def test_nothing_to_change_sends_nothing() -> None:
    assert route_changes({P4: PLAIN}, {P4: PLAIN}, [N4, N6], (), 65001) == []


def test_withdrawals_come_first_and_each_goes_to_its_familys_neighbors_only() -> None:
    changes = route_changes({Q4: PLAIN}, {P4: PLAIN, P6: PLAIN}, [N4, M4, N6], (), 65001)
    # withdrawals first, then by their text: a stable order
    assert [(c.verb, c.prefix) for c in changes] == [("withdraw", Q4), ("announce", P6), ("announce", P4)]
    assert changes[0].commands == (
        "neighbor 192.0.2.9 withdraw route 203.0.113.54/32 next-hop self",
        "neighbor 192.0.2.17 withdraw route 203.0.113.54/32 next-hop self",
    )
    assert changes[1].commands == ("neighbor 2001:db8:0:1::1 announce route 2001:db8::53/128 next-hop self",)
    assert [str(c) for c in changes] == [
        "withdrew 203.0.113.54/32",
        "announced 2001:db8::53/128",
        "announced 203.0.113.53/32",
    ]


def test_other_attributes_announce_the_prefix_again_and_a_held_neighbor_is_skipped() -> None:
    (change,) = route_changes({P4: PLAIN}, {P4: TAGGED}, [N4, M4], {"192.0.2.17"}, 65001)
    assert change.announced and change.attributes == TAGGED
    assert change.commands == ("neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self community [65535:0]",)


def test_a_weight_goes_out_as_the_link_bandwidth_extended_community() -> None:
    weighted = RouteAttributes(communities=("64500:1",), weight=3)
    (change,) = route_changes({P4: PLAIN}, {P4: weighted}, [N4], (), 65053)
    # 0x40 0x04: non-transitive two-octet-AS link bandwidth; AS 65053 (0xfe1d); 3 x 125,000 bytes/s as a float
    assert change.commands == (
        "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self community [64500:1] "
        "extended-community [0x4004fe1d48b71b00]",
    )
    assert route_changes({P4: weighted}, {P4: weighted.weighing(3)}, [N4], (), 65053) == []
    (lighter,) = route_changes({P4: weighted}, {P4: weighted.weighing(1)}, [N4], (), 65053)
    assert lighter.commands[0].endswith("extended-community [0x4004fe1d47f42400]")  # 125,000.0
    (unweighted,) = route_changes({P4: weighted}, {P4: weighted.weighing(None)}, [N4], (), 65053)
    assert "extended-community" not in unweighted.commands[0]


def test_holding_a_neighbor_withdraws_from_it_alone_and_releasing_it_announces_again() -> None:
    sent = {P4: TAGGED, Q4: PLAIN, P6: PLAIN}
    assert hold_commands(sent, N4, True, 65001) == [
        "neighbor 192.0.2.9 withdraw attributes next-hop self nlri 203.0.113.53/32 203.0.113.54/32",
    ]
    assert hold_commands(sent, N4, False, 65001) == [
        "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self community [65535:0]",
        "neighbor 192.0.2.9 announce route 203.0.113.54/32 next-hop self",
    ]


def test_many_prefixes_go_as_multi_nlri_commands_of_at_most_max_nlri() -> None:
    many = [ipaddress.ip_network(f"2001:db8:53::{i:x}/128") for i in range(1, MAX_NLRI + 3)]
    assert batch_commands(N6, "withdraw", many[:1]) == [
        "neighbor 2001:db8:0:1::1 withdraw route 2001:db8:53::1/128 next-hop self"
    ]
    first, second = batch_commands(N6, "announce", many, " med 5")
    assert first.startswith("neighbor 2001:db8:0:1::1 announce attributes next-hop self med 5 nlri 2001:db8:53::1/128 ")
    assert first.split(" nlri ")[1].split() == [str(p) for p in many[:MAX_NLRI]]
    assert second.endswith(f" nlri {many[-2]} {many[-1]}")


def test_changes_are_batched_by_verb_and_attributes_to_each_neighbor_of_their_family() -> None:
    r4 = ipaddress.ip_network("203.0.113.55/32")
    changes = route_changes({Q4: PLAIN}, {P4: PLAIN, r4: PLAIN, P6: TAGGED}, [N4, M4, N6], {"192.0.2.17"}, 65001)
    assert [
        (commands, [c.prefix for c in group]) for commands, group in batched(changes, [N4, M4, N6], {"192.0.2.17"})
    ] == [
        (["neighbor 192.0.2.9 withdraw route 203.0.113.54/32 next-hop self"], [Q4]),
        (["neighbor 2001:db8:0:1::1 announce route 2001:db8::53/128 next-hop self community [65535:0]"], [P6]),
        (["neighbor 192.0.2.9 announce attributes next-hop self nlri 203.0.113.53/32 203.0.113.55/32"], [P4, r4]),
    ]


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("done", Ack(True)),
        ("error", Ack(False)),
        ("neighbor 192.0.2.9 up", SessionEvent("192.0.2.9", "up", "")),
        ("neighbor 192.0.2.9 connected", SessionEvent("192.0.2.9", "connected", "")),
        ("neighbor 192.0.2.9 sideways", None),
        ("shutdown", None),
        ("", None),
        ("done and more", None),
    ],
)
def test_what_exabgp_writes_back(line: str, event: Ack | SessionEvent | None) -> None:
    assert parse_event(line) == event


S = ChildState


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_every_move_of_a_child_is_in_the_table_or_raises_leaving_the_state(old: ChildState, new: ChildState) -> None:
    if new is old or new in TRANSITIONS[old]:
        assert moved("x", old, new) is new and may(old, new)
    else:
        assert not may(old, new)
        with pytest.raises(IllegalTransition, match=f"x: {old} -> {new} is not a transition"):
            moved("x", old, new)


def test_the_table_is_the_supervisors_story() -> None:
    assert TRANSITIONS[S.RESTARTING] == {S.STARTING, S.STOPPED}  # an exited child's late answer is not "up"
    assert TRANSITIONS[S.STOPPED] == frozenset()
    assert all(S.STOPPED in TRANSITIONS[s] for s in S if s is not S.STOPPED)
