"""The return path (anycastd.announce.return_path): which next hops, and how they are kept in the kernel."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
import yaml

from anycastd.announce.return_path import InMemoryRoutes, ReturnPath, gateways
from anycastd.config import sidecar as config
from tests.helpers import GOOD, problems_of, with_value

CLIENTS_V4, CLIENTS_V6 = ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8:ffff::/64")
R1, R2 = ipaddress.ip_address("192.0.2.9"), ipaddress.ip_address("192.0.2.73")


def pop_config(bfd: object = True) -> config.Config:
    """Two ToRs, one IPv4 session each (the first with BFD), one IPv6, and a return path for both families."""
    data = yaml.safe_load(with_value(GOOD, ["neighbors", 0, "bfd"], bfd))
    data["neighbors"].append({"address": "192.0.2.73", "peer_asn": 65000, "local_address": "192.0.2.74"})
    data["return_path"] = {"prefixes": [str(CLIENTS_V4), str(CLIENTS_V6)], "metric": 5}
    return config.parse(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("bgp", "bfd", "via"),
    [
        ({"192.0.2.9": "up", "192.0.2.73": "up"}, {"192.0.2.9": "up"}, (R1, R2)),
        ({"192.0.2.9": "up", "192.0.2.73": "up"}, {"192.0.2.9": "down"}, (R2,)),  # BFD decides where it runs
        ({"192.0.2.9": "down", "192.0.2.73": "up"}, {"192.0.2.9": "up"}, (R1, R2)),  # ... even against BGP
        ({"192.0.2.9": "up", "192.0.2.73": "down"}, {"192.0.2.9": "up"}, (R1,)),  # no BFD: BGP decides
        ({}, {}, (R1, R2)),  # nothing known to be alive: every one of them, as the plain ECMP route
    ],
)
def test_the_next_hops_are_the_live_neighbors_of_the_family(
    bgp: dict[str, str], bfd: dict[str, str], via: tuple[object, ...]
) -> None:
    c = pop_config()
    assert gateways(CLIENTS_V4, c.neighbors, bgp, bfd) == via
    assert gateways(CLIENTS_V6, c.neighbors, bgp, bfd) == (ipaddress.ip_address("2001:db8:0:1::1"),)


def test_the_routes_follow_the_sessions_and_are_left_natural_on_stop() -> None:
    c = pop_config()
    assert c.return_path is not None
    bgp = {"192.0.2.9": "up", "192.0.2.73": "up", "2001:db8:0:1::1": "up"}
    bfd = {"192.0.2.9": "up"}
    routes = InMemoryRoutes()
    rp = ReturnPath(c.return_path, c.neighbors, lambda: bgp, lambda: bfd, routes)

    async def body() -> None:
        await rp.reconcile()
        assert routes.routes[(CLIENTS_V4, 5)] == (R1, R2)
        calls = routes.calls
        await rp.reconcile()
        assert routes.calls == calls  # nothing changed: nothing written
        bfd["192.0.2.9"] = "down"
        await rp.reconcile()
        assert routes.routes[(CLIENTS_V4, 5)] == (R2,)
        routes.broken = "Network is unreachable"
        bfd["192.0.2.9"] = "up"
        await rp.reconcile()
        assert rp.describe()["problem"] == "Network is unreachable" and rp.installed[CLIENTS_V4] is None
        routes.broken = None
        await rp.reconcile()  # tried again: not installed means not in step
        assert routes.routes[(CLIENTS_V4, 5)] == (R1, R2) and rp.describe()["problem"] is None
        bfd["192.0.2.9"] = "down"
        await rp.close()
        assert routes.routes[(CLIENTS_V4, 5)] == (R1, R2)  # stopped: the natural route

    asyncio.run(body())
    assert rp.changes == 4  # both families at first, r1 out, r1 back (after the failed write)


def test_a_wake_decides_at_once_and_the_resync_writes_again() -> None:
    c = pop_config()
    assert c.return_path is not None
    bfd = {"192.0.2.9": "up"}
    bgp = {"192.0.2.73": "up"}
    routes = InMemoryRoutes()
    rp = ReturnPath(c.return_path, c.neighbors, lambda: bgp, lambda: bfd, routes, resync=0.05)

    async def body() -> None:
        task = asyncio.create_task(rp.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if routes.routes.get((CLIENTS_V4, 5)) == (R1, R2):
                break
        bfd["192.0.2.9"] = "down"
        rp.wake()
        for _ in range(100):
            await asyncio.sleep(0.001)
            if routes.routes[(CLIENTS_V4, 5)] == (R2,):
                break
        assert routes.routes[(CLIENTS_V4, 5)] == (R2,)
        calls = routes.calls
        await asyncio.sleep(0.12)
        assert routes.calls > calls  # written again by the resync, though nothing changed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(body())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"prefixes": ["198.51.100.0/24", "198.51.100.0/24"]},
            "return_path.prefixes[1]: 198.51.100.0/24 is listed twice",
        ),
        ({"prefixes": ["x"]}, "return_path.prefixes[0]: must be a prefix with a length"),
        ({"prefixes": []}, "return_path.prefixes: must be a non-empty list of prefixes, got a list"),
        ({"prefixes": ["198.51.100.0/24"], "metric": -1}, "return_path.metric: must be between 0 and 4294967295"),
        ({"prefixes": ["198.51.100.0/24"], "table": 5}, "return_path.table: unknown key"),
        ({"prefixes": [f"198.51.{i}.0/24" for i in range(33)]}, "must list at most 32 prefixes, got 33"),
        ({"prefixes": ["fe80::%eth0/64"]}, "must not carry a zone id"),
    ],
)
def test_a_bad_return_path_is_refused_with_the_key(value: object, message: str) -> None:
    problems = problems_of(with_value(GOOD, ["return_path"], value), config.parse)
    assert any(message in p for p in problems), problems


def test_a_family_no_neighbor_carries_is_refused() -> None:
    text = with_value(GOOD, ["neighbors"], [{"address": "192.0.2.9", "peer_asn": 65000, "local_address": "192.0.2.10"}])
    text = with_value(text, ["services", "dns", "prefixes"], ["203.0.113.53/32"])
    text = with_value(text, ["return_path"], {"prefixes": ["2001:db8:ffff::/64"]})
    assert problems_of(text, config.parse) == [
        "return_path.prefixes[0]: 2001:db8:ffff::/64 is IPv6, but no IPv6 neighbor could carry it"
    ]
