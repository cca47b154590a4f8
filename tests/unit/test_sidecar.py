"""The sidecar loop with in-memory adapters and a fake clock: no network, no sleeps."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import pytest

from anycastd.address import InMemoryAddresses
from anycastd.announce import InMemoryAnnouncer
from anycastd.checks.dns import ProbeResult
from anycastd.config import DnsCheck, IPAddress, parse
from anycastd.errors import AnnounceError
from anycastd.health import Outcome
from anycastd.drain import InMemoryMeter
from anycastd.sidecar import Liveness, Sidecar
from anycastd.state import InMemoryStore
from tests.unit.test_config import GOOD

OK = ProbeResult(Outcome.OK, "NOERROR in 1 ms", 0.001, "192.0.2.10")
SOFT = ProbeResult(Outcome.FAIL, "timeout after 250 ms", None, "192.0.2.10")
HARD = ProbeResult(Outcome.HARD_FAIL, "connection refused", None, "192.0.2.10")


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class ScriptedProber:
    """Returns the scripted results in order, then asks the sidecar to stop."""

    def __init__(self, results: list[ProbeResult], stop: asyncio.Event, announcer: InMemoryAnnouncer) -> None:
        self.results = list(results)
        self.stop = stop
        self.announcer = announcer
        self.seen: list[tuple[IPAddress, tuple[IPAddress, ...]]] = []
        self.announced_before: list[bool] = []

    async def probe(self, check: DnsCheck, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        self.seen.append((check.address, tuple(service_addresses)))
        self.announced_before.append(bool(self.announcer.announced))
        if not self.results:
            self.stop.set()
            await asyncio.Event().wait()  # never returns; cancelled on stop
        return self.results.pop(0)


def run_sidecar(
    results: list[ProbeResult], announcer: InMemoryAnnouncer | None = None
) -> tuple[Sidecar, InMemoryAnnouncer, ScriptedProber, InMemoryAddresses]:
    config = parse(GOOD)
    announcer = announcer or InMemoryAnnouncer()
    addresses = InMemoryAddresses()
    fake = FakeTime()

    async def go() -> tuple[Sidecar, ScriptedProber]:
        stop = asyncio.Event()
        prober = ScriptedProber(results, stop, announcer)
        sidecar = Sidecar(
            config,
            announcer,
            addresses,
            prober,
            Liveness(fake.clock),
            store=InMemoryStore(),
            meter=InMemoryMeter(),
            clock=fake.clock,
            sleep=fake.sleep,
            jitter=lambda _: 0.0,
        )
        await sidecar.run(stop)
        return sidecar, prober

    sidecar, prober = asyncio.run(go())
    return sidecar, announcer, prober, addresses


def test_nothing_is_announced_until_rise_then_withdrawn_on_a_hard_failure() -> None:
    sidecar, announcer, prober, addresses = run_sidecar([OK, OK, OK, OK, HARD, OK, OK, OK])
    # ... and the last withdrawal is the stop's, before ExaBGP is closed
    assert announcer.calls == [("dns", True), ("dns", False), ("dns", True), ("dns", False)]
    # before each probe: was it announced? The first three must all be False.
    assert prober.announced_before == [False, False, False, True, True, False, False, False, True]
    assert addresses.bound == {
        "anycast0": {ipaddress.ip_network("203.0.113.53/32"), ipaddress.ip_network("2001:db8::53/128")}
    }
    assert prober.seen[0] == (
        ipaddress.ip_address("192.0.2.10"),
        (ipaddress.ip_address("203.0.113.53"), ipaddress.ip_address("2001:db8::53")),
    )
    assert announcer.started and announcer.closed and announcer.announced == {}
    status = sidecar.checks["dns"][0]
    assert (status.probes, status.failures, status.last) == (8, 1, OK)  # the ninth never returned


def test_soft_failures_need_fall_in_a_row() -> None:
    _, announcer, _, _ = run_sidecar([OK, OK, OK, SOFT, SOFT, OK, SOFT, SOFT, SOFT])
    assert announcer.calls == [("dns", True), ("dns", False)]


class FailingAnnouncer(InMemoryAnnouncer):
    async def set_announced(
        self, service: str, prefixes: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], announced: bool
    ) -> None:
        self.calls.append((service, announced))
        raise AnnounceError("ExaBGP went away")


def test_a_failing_announcer_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    _, announcer, prober, _ = run_sidecar([OK, OK, OK, HARD, OK], FailingAnnouncer())
    assert announcer.calls == [("dns", True), ("dns", False)]
    assert "dns: could not announce: ExaBGP went away" in caplog.text
    assert len(prober.seen) == 6


def test_liveness_expires_when_a_loop_stops_beating() -> None:
    fake = FakeTime()
    live = Liveness(fake.clock)
    assert live()  # nothing registered yet
    live.beat("dns/checks[0]", 1.5)
    fake.now += 1.4
    assert live()
    fake.now += 0.2
    assert not live()
    live.forget("dns/checks[0]")
    assert live()
