"""Zone probes against tiny real authoritative servers (a secondary and its primary): loaded, fresh, stale."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from typing import TypeVar

from anycastd.checks.dns import ProbeResult
from anycastd.checks.zone import ZoneProber
from anycastd.config.checks import Check
from anycastd.core.health import Outcome
from tests.unit.responder import Responder, serve

LOCALHOST = ipaddress.ip_address("127.0.0.1")
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def zone_check(secondary: Responder, primary: Responder | None, *zones: str, max_lag: float = 10.0) -> Check:
    return Check(
        LOCALHOST, kind="zone", port=secondary.port, zones=zones, interval=1.0, timeout=0.3, max_lag=max_lag,
        primary=LOCALHOST if primary else None, primary_port=primary.port if primary else 53,
    )  # fmt: skip


def with_servers(go: Callable[[Responder, Responder, ZoneProber, Clock], Awaitable[T]]) -> T:
    async def run() -> T:
        secondary = Responder(soa={"example.com.": 5, "example.net.": 7})
        primary = Responder(soa={"example.com.": 5, "example.net.": 7})
        async with serve(secondary), serve(primary):
            clock = Clock()
            return await go(secondary, primary, ZoneProber(clock), clock)

    return asyncio.run(run())


def test_loaded_and_fresh_zones_pass() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> ProbeResult:
        return await z.probe(zone_check(s, p, "example.com.", "example.net."))

    result = with_servers(go)
    assert result.ok
    assert result.reason == "127.0.0.1: example.com. serial 5, the primary's 5; example.net. serial 7, the primary's 7"


def test_a_zone_the_server_does_not_serve_fails_as_not_loaded() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> ProbeResult:
        return await z.probe(zone_check(s, p, "example.com.", "example.org."))

    result = with_servers(go)
    assert (result.outcome, result.kind) == (Outcome.FAIL, "zone")
    assert result.reason == "127.0.0.1: example.org. answered REFUSED: the zone is not loaded"


def test_an_expired_zone_fails_as_not_loaded() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> ProbeResult:
        s.mode = "servfail"  # what a secondary answers for a zone that expired
        return await z.probe(zone_check(s, p, "example.com."))

    result = with_servers(go)
    assert result.kind == "zone" and "answered SERVFAIL" in result.reason


def test_a_secondary_behind_its_primary_fails_after_max_lag_and_passes_once_it_catches_up() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> list[ProbeResult]:
        c = zone_check(s, p, "example.com.", max_lag=10)
        assert p.soa is not None and s.soa is not None
        p.soa["example.com."] = 6  # the primary's zone changed; transfers are blocked
        results = [await z.probe(c)]
        clock.now += 10.5
        results.append(await z.probe(c))
        s.soa["example.com."] = 6  # the transfer went through
        results.append(await z.probe(c))
        return results

    lagging, stale, caught_up = with_servers(go)
    assert lagging.ok and "behind the primary's 6 for 0.0 s (max_lag 10 s)" in lagging.reason
    assert (stale.outcome, stale.kind) == (Outcome.FAIL, "stale")
    assert stale.reason == (
        "127.0.0.1: example.com. serial 5, behind the primary's 6 for 10.5 s, more than max_lag (10 s)"
    )
    assert caught_up.ok


def test_a_silent_primary_fails_no_server() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> ProbeResult:
        p.mode = "silent"
        return await z.probe(zone_check(s, p, "example.com."))

    result = with_servers(go)
    assert result.ok and "the primary did not answer" in result.reason


def test_one_lost_packet_does_not_fail_the_probe() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> tuple[ProbeResult, int]:
        s.mode = p.mode = "drop-first"  # each first send of a question is lost
        return await z.probe(zone_check(s, p, "example.com.")), s.queries

    result, asked = with_servers(go)
    assert result.ok and "the primary's 5" in result.reason
    assert asked == 2


def test_without_a_primary_only_loading_is_checked() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> ProbeResult:
        return await z.probe(zone_check(s, None, "example.com."))

    assert with_servers(go).reason == "127.0.0.1: example.com. serial 5"


def test_a_dead_server_is_a_hard_failure_and_a_silent_one_times_out() -> None:
    async def go(s: Responder, p: Responder, z: ZoneProber, clock: Clock) -> tuple[ProbeResult, ProbeResult]:
        c = zone_check(s, p, "example.com.")
        s.mode = "silent"
        silent = await z.probe(c)
        dead = Check(LOCALHOST, kind="zone", port=1, zones=("example.com.",), interval=1.0, timeout=0.3)
        return silent, await z.probe(dead)

    silent, dead = with_servers(go)
    assert silent.kind == "timeout"
    assert (dead.outcome, dead.kind) == (Outcome.HARD_FAIL, "refused")
