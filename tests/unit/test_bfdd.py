"""bfdd's side of anycastd (anycastd.announce.bfdd): its configuration, its answers, what it needs, what it shows."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from anycastd.announce.bfdd import Bfdd, InMemoryBfd, missing_capabilities, peers_of
from anycastd.announce.bfdd_text import (
    BfdError,
    BfdPeer,
    parse_notification,
    parse_peers,
    render_config,
    subscribe_message,
)
from anycastd.cli.anycastctl import EXIT_DEGRADED, EXIT_OK, status_code
from anycastd.config import sidecar as config
from anycastd.core.net import IPAddress
from anycastd.daemons.metrics import Metrics, View
from tests.helpers import GOOD, with_value

V4, V6 = ipaddress.ip_address("192.0.2.9"), ipaddress.ip_address("2001:db8:0:1::1")


def with_bfd(**bfd: object) -> config.Config:
    text = with_value(GOOD, ["neighbors", 0, "bfd"], bfd or True)
    return config.parse(with_value(text, ["neighbors", 1, "bfd"], {"interval": 0.05, "multiplier": 5}))


def test_the_configuration_has_one_peer_block_per_session() -> None:
    peers = [
        BfdPeer(V4, ipaddress.ip_address("192.0.2.10"), config.BfdSettings(0.1, 3)),
        BfdPeer(V6, ipaddress.ip_address("2001:db8:0:1::2"), config.BfdSettings(), multihop=True),
    ]
    assert render_config(peers) == (
        "! written by anycastd for its BGP sessions with BFD: do not edit\n"
        "bfd\n"
        " peer 192.0.2.9 local-address 192.0.2.10\n"
        "  transmit-interval 100\n"
        "  receive-interval 100\n"
        "  detect-multiplier 3\n"
        " exit\n"
        " peer 2001:db8:0:1::1 multihop local-address 2001:db8:0:1::2\n"
        "  transmit-interval 300\n"
        "  receive-interval 300\n"
        "  detect-multiplier 3\n"
        " exit\n"
        "exit\n"
    )


def test_a_zone_id_never_reaches_bfdds_configuration() -> None:
    peer = BfdPeer(ipaddress.ip_address("fe80::1%eth0"), ipaddress.ip_address("fe80::2"), config.BfdSettings())
    with pytest.raises(ValueError, match="is not a vtysh word"):
        render_config([peer])


def test_a_neighbor_behind_a_gateway_gets_multihop() -> None:
    async def routed(address: IPAddress) -> bool:
        return address.version == 4

    peers = asyncio.run(peers_of(with_bfd(), routed))
    assert [(p.neighbor, p.multihop, p.settings.interval_ms) for p in peers] == [(V4, False, 300), (V6, True, 50)]


ANSWER = [
    {
        "multihop": False, "peer": "192.0.2.9", "local": "192.0.2.10", "status": "up", "uptime": 12,
        "diagnostic": "ok", "remote-diagnostic": "ok", "transmit-interval": 100, "remote-receive-interval": 100,
        "detect-multiplier": 3, "remote-detect-multiplier": 3,
    },
    {"peer": "2001:db8:0:1::1", "status": "down", "downtime": 4, "diagnostic": "control detection time expired"},
]  # fmt: skip


def test_bfdds_answer_is_read_by_peer_address() -> None:
    sessions = parse_peers(json.dumps(ANSWER))
    assert sessions[V4].state == "up" and sessions[V4].since == 12 and sessions[V4].remote_receive_ms == 100
    assert (sessions[V6].state, sessions[V6].diagnostic, sessions[V6].since) == (
        "down",
        "control detection time expired",
        4,
    )


@pytest.mark.parametrize(
    "entry",
    [
        "not a mapping",
        {"peer": "not an address", "status": "up"},
        {"peer": None},
    ],
)
def test_entries_of_another_shape_are_skipped(entry: object) -> None:
    assert parse_peers(json.dumps([entry])) == {}


def test_values_of_another_shape_become_unknown_or_none() -> None:
    odd = {"peer": "192.0.2.9", "status": "bogus", "diagnostic": "\x1b[31m", "transmit-interval": -1, "uptime": True}
    session = parse_peers(json.dumps([odd]))[V4]
    assert (session.state, session.diagnostic, session.transmit_ms, session.since) == ("unknown", "", None, None)


@pytest.mark.parametrize("text", ["% Unknown command", '{"peer": "192.0.2.9"}', "[1, 2"])
def test_an_answer_that_is_not_a_list_of_sessions_is_an_error(text: str) -> None:
    with pytest.raises(BfdError, match="bfdd's answer"):
        parse_peers(text)


def test_an_empty_answer_is_no_session() -> None:
    assert parse_peers("") == {}


@pytest.mark.parametrize(
    ("status", "missing"),
    [
        ("Uid:\t0\t0\t0\t0\nCapAmb:\t0000000000000000\nCapBnd:\t000001ffffffffff\n", []),  # root: the bounding set
        ("Uid:\t0\t0\t0\t0\nCapBnd:\t0000000000001000\n", ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_ADMIN"]),
        ("Uid:\t998\t998\t998\t998\nCapAmb:\t0000000000001000\nCapBnd:\t000001ffffffffff\n",
         ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_ADMIN"]),  # the unit without its drop-in
        ("Uid:\t998\t998\t998\t998\nCapAmb:\t0000000000203400\n", []),  # with packaging/systemd/.../bfd.conf
        ("Uid:\t998\t998\t998\t998\nCapAmb:\t0000000000002400\n", ["CAP_SYS_ADMIN"]),
    ],
)  # fmt: skip
def test_the_capabilities_bfdd_needs_are_checked_before_it_is_started(status: str, missing: list[str]) -> None:
    assert missing_capabilities(status) == missing


def test_before_bfdd_answers_every_session_is_unknown() -> None:
    bfd = Bfdd(with_bfd())
    assert bfd.session_states() == {str(V4): "unknown", str(V6): "unknown"}
    described = bfd.describe()
    assert described["state"] == "starting" and described["pid"] is None
    assert described["sessions"][str(V6)] == {
        "state": "unknown",
        "interval_ms": 50,
        "multiplier": 5,
        "multihop": None,
        "bfdd": None,
        "damping": None,  # no flap damping given
    }


def test_every_change_of_a_session_is_reported_once() -> None:
    changes: list[tuple[str, str]] = []
    bfd = Bfdd(with_bfd(), on_change=lambda n, s: changes.append((n, s)))
    bfd._update(parse_peers(json.dumps(ANSWER)))
    bfd._update(parse_peers(json.dumps(ANSWER)))
    assert changes == [(str(V4), "up"), (str(V6), "down")]
    assert bfd.session_states() == {str(V4): "up", str(V6): "down"} and bfd.state == "up"
    bfd._forget_sessions()  # bfdd died
    assert changes[2:] == [(str(V4), "unknown"), (str(V6), "unknown")]


def test_bfdd_that_cannot_be_started_is_a_problem_said_in_status(tmp_path: Path) -> None:
    text = with_value(with_value(GOOD, ["runtime_dir"], str(tmp_path)), ["neighbors", 0, "bfd"], True)
    # check-config refuses a missing bfdd; here it went missing after (an upgrade removed it)
    c = replace(config.parse(text), bfdd=config.BfddSettings(("/nonexistent/bfdd",)))

    async def body() -> dict[str, object]:
        async def on_link(address: IPAddress) -> bool:
            return True

        bfd = Bfdd(c, on_link=on_link)
        await bfd.start()
        for _ in range(200):
            if bfd.restarts:
                break
            await asyncio.sleep(0.01)
        await bfd.close()
        return bfd.describe()

    described = asyncio.run(body())
    assert described["problem"] == "cannot start bfdd (/nonexistent/bfdd): No such file or directory"
    assert described["state"] == "stopped"


def test_bfd_sessions_are_metrics_and_a_down_one_makes_status_degraded() -> None:
    metrics = Metrics()
    metrics.declare_bfd([str(V4)], ["up", "down"])
    metrics.bfd_transition(str(V4), "up")
    metrics.watch(lambda: View(bfd={str(V4): "up", str(V6): "down"}, bfdd_restarts=2))
    text = generate_latest(metrics.registry).decode()
    assert f'anycastd_bfd_up{{neighbor="{V4}"}} 1.0' in text
    assert f'anycastd_bfd_up{{neighbor="{V6}"}} 0.0' in text
    assert f'anycastd_bfd_transitions_total{{neighbor="{V4}",to="up"}} 1.0' in text
    assert f'anycastd_bfd_transitions_total{{neighbor="{V4}",to="down"}} 0.0' in text
    assert "anycastd_bfdd_restarts_total 2.0" in text
    doc = {"bgp": {"192.0.2.9": "up"}, "services": [], "bfd": {"sessions": {str(V4): {"state": "up"}}}}
    assert status_code(doc) == EXIT_OK
    doc["bfd"] = {"sessions": {str(V4): {"state": "down"}}}
    assert status_code(doc) == EXIT_DEGRADED
    assert status_code({**doc, "bfd": None}) == EXIT_OK


def test_the_in_memory_speaker_is_what_tests_set() -> None:
    bfd = InMemoryBfd({str(V4): "up"})
    asyncio.run(bfd.start())
    assert bfd.started and bfd.session_states() == {str(V4): "up"}


def test_the_subscription_asks_for_every_sessions_state() -> None:
    message = subscribe_message()
    length, _, kind, version = struct.unpack("!IHBB", message[:8])
    assert (length, kind, version) == (8, 4, 1)  # BMT_NOTIFY, version 1
    assert struct.unpack("=Q", message[8:]) == (1,)  # BCM_NOTIFY_PEER_STATE, as bfdd copies it


@pytest.mark.parametrize(
    ("kind", "body", "said"),
    [
        (4, b'{"op":"status","peer-address":"192.0.2.9","state":"down","downtime":0}', (V4, "down")),
        (4, b'{"op":"status","peer-address":"2001:db8:0:1::1","state":"adm-down"}', (V6, "shutdown")),
        (4, b'{"op":"status","peer-address":"192.0.2.9","state":"weird"}', (V4, "unknown")),
        (4, b'{"op":"add","peer-address":"192.0.2.9"}', None),  # a configuration notification
        (1, b'{"status":"ok"}', None),  # the answer to the subscription
        (4, b'{"op":"status","peer-address":"not an address","state":"up"}', None),
        (4, b"[1, 2]", None),
    ],
)
def test_a_notification_is_one_sessions_state(kind: int, body: bytes, said: object) -> None:
    assert parse_notification(kind, body) == said


def test_a_notification_that_is_not_json_is_an_error() -> None:
    with pytest.raises(BfdError, match="bfdd's notification is not JSON"):
        parse_notification(4, b"\xff{")
