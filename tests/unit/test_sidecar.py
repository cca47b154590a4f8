"""The sidecar loop with in-memory adapters and a fake clock: no network, no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from anycastd.announce import InMemoryAnnouncer
from anycastd.checks.dns import ProbeResult
from anycastd.cli.anycastctl import EXIT_DEGRADED, EXIT_OK, status_code
from anycastd.config.checks import Check
from anycastd.config.sidecar import DrainSettings, parse
from anycastd.control.protocol import (
    AnnounceReply,
    AnnounceRequest,
    CheckReply,
    CheckRequest,
    ControlError,
    WithdrawReply,
    WithdrawRequest,
)
from anycastd.core.attributes import PLAIN, RouteAttributes
from anycastd.core.health import Outcome, State
from anycastd.core.net import IPAddress
from anycastd.daemons.sidecar import FirstDelays, Sidecar
from anycastd.daemons.skeleton import Liveness, Probe
from anycastd.daemons.state import FileStore, InMemoryStore, Maintenance, MaintenanceStore
from anycastd.daemons.status import CheckStatus
from anycastd.errors import AnnounceError, ConfigError
from anycastd.peer import Peer
from anycastd.watch.address import InMemoryAddresses
from anycastd.watch.drain import InMemoryMeter
from anycastd.watch.triggers import Watched
from tests.helpers import GOOD, HARD, OK, SOFT, bring_up, make_sidecar
from tests.unit.fake_time import FakeTime


class ScriptedProber:
    """Returns the scripted results in order, then asks the sidecar to stop."""

    def __init__(self, results: list[ProbeResult], stop: asyncio.Event, announcer: InMemoryAnnouncer) -> None:
        self.results = list(results)
        self.stop = stop
        self.announcer = announcer
        self.seen: list[tuple[IPAddress, tuple[IPAddress, ...]]] = []
        self.announced_before: list[bool] = []
        self.rounds: list[tuple[IPAddress, ...]] = []  # each shared round's addresses

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        self.seen.append((check.address, tuple(service_addresses)))
        self.announced_before.append(bool(self.announcer.announced))
        if not self.results:
            self.stop.set()
            await asyncio.Event().wait()  # never returns; cancelled on stop
        return self.results.pop(0)

    async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
        """A shared round: the next scripted result, for every address."""
        self.rounds.append(tuple(targets))
        return [await self.probe(check, targets[1:])] * len(targets)


def run_sidecar(
    results: list[ProbeResult],
    announcer: InMemoryAnnouncer | None = None,
    store: MaintenanceStore | None = None,
    text: str = GOOD,
) -> tuple[Sidecar, InMemoryAnnouncer, ScriptedProber, InMemoryAddresses]:
    config = parse(text)
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
            store=store if store is not None else InMemoryStore(),
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
    async def flush(self) -> None:
        raise AnnounceError("ExaBGP went away")


def test_a_failing_announcer_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    _, announcer, prober, _ = run_sidecar([OK, OK, OK, HARD, OK], FailingAnnouncer())
    assert announcer.calls == [("dns", True), ("dns", False)]
    assert "could not announce the changes of a probe round: ExaBGP went away" in caplog.text
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


# the operator's side: maintenance, drains, reload, status, metrics --------------

TWO = (
    GOOD
    + """\
  ntp:
    prefixes: [203.0.113.123/32]
    checks:
      - address: 192.0.2.10
"""
)
#: Three services; "dot" has dns's very check, "slow" another (its interval).
SHARED = (
    GOOD
    + """\
  dot:
    prefixes: [203.0.113.54/32]
    checks:
      - {address: 192.0.2.10, qname: health.example, qtype: txt, answer: healthy, interval: 0.5, timeout: 0.25}
  slow:
    prefixes: [203.0.113.55/32]
    checks:
      - {address: 192.0.2.10, qname: health.example, qtype: txt, answer: healthy, interval: 0.6, timeout: 0.25}
"""
)
ROOT = Peer(pid=1, uid=0)


async def feed(sidecar: Sidecar, name: str, result: ProbeResult) -> None:
    service = sidecar.config.service(name)
    for _ in range(service.checks[0].fall_hard):
        await sidecar.apply(service, sidecar.health[name].feed(0, result.for_health(), sidecar.clock()))


def test_a_persisted_drain_is_honoured_from_the_first_probe() -> None:
    store = InMemoryStore({"dns": Maintenance("kernel upgrade", "root", 1.0)})
    sidecar, announcer, _, _ = run_sidecar([OK] * 6, store=store)
    assert announcer.calls == []  # the probes passed, but nothing was ever announced
    assert sidecar.health["dns"].state is State.MAINTENANCE


def test_an_unreadable_state_file_keeps_everything_withdrawn_and_says_why() -> None:
    sidecar, announcer, _, _ = run_sidecar([OK] * 6, store=InMemoryStore(broken="maintenance.json: not JSON"))
    assert announcer.calls == []
    status = sidecar.status()
    assert status["problem"] == "maintenance.json: not JSON"
    assert status["services"][0]["maintenance"]["reason"] == "maintenance state unreadable: maintenance.json: not JSON"


def test_a_nonsensical_state_file_is_moved_aside_and_its_withdrawal_persisted(tmp_path: Path) -> None:
    """`since: NaN` once crash-looped the daemon at start: now it starts, withdrawn, and stays so across a restart."""
    (tmp_path / "maintenance.json").write_text(
        '{"version": 1, "drained": {"dns": {"reason": "r", "who": "w", "since": NaN}}}'
    )
    sidecar, announcer, _, _ = run_sidecar([OK] * 6, store=FileStore(tmp_path))
    assert announcer.calls == []
    assert "moved aside to" in sidecar.status()["problem"]
    assert len(list(tmp_path.glob("maintenance.json.bad-*"))) == 1
    again = FileStore(tmp_path).load()
    assert list(again) == ["dns"] and again["dns"].reason.startswith("maintenance state unreadable")
    _, announcer, _, _ = run_sidecar([OK] * 6, store=FileStore(tmp_path))
    assert announcer.calls == []


def test_withdraw_persists_who_and_why_then_announce_lifts_it() -> None:
    async def go() -> None:
        sidecar, announcer, store, _ = make_sidecar()
        await bring_up(sidecar, "dns")
        assert announcer.calls == [("dns", True)]
        reply = await sidecar.handle(WithdrawRequest("dns", "kernel upgrade", "alice"), ROOT)
        assert reply == WithdrawReply(("dns",))
        assert announcer.calls[-1] == ("dns", False)
        assert store.drained["dns"].reason == "kernel upgrade"
        assert store.drained["dns"].who == "root (sudo by alice)"
        svc = sidecar.status("dns")["services"][0]
        assert (svc["state"], svc["announced"], svc["maintenance"]["who"]) == (
            "maintenance",
            False,
            "root (sudo by alice)",
        )
        assert svc["transitions"][-1]["to"] == "maintenance"
        # the probes keep passing, but it stays withdrawn
        await bring_up(sidecar, "dns")
        assert announcer.calls[-1] == ("dns", False)
        reply = await sidecar.handle(AnnounceRequest("dns"), ROOT)
        assert reply == AnnounceReply(("dns",), ())
        assert store.drained == {} and announcer.calls[-1] == ("dns", True)
        assert await sidecar.handle(AnnounceRequest(None), ROOT) == AnnounceReply((), ("dns",))

    asyncio.run(go())


KEPT: tuple[bool, tuple[str, ...]] = (True, ("65535:0",))  # announced, tagged GRACEFUL_SHUTDOWN
GONE: tuple[bool, tuple[str, ...]] = (False, ())
PLAIN_PATH: tuple[bool, tuple[str, ...]] = (True, ())


def test_a_soft_drain_keeps_the_path_tagged_survives_a_restart_and_a_failure_withdraws_it() -> None:
    async def go() -> None:
        sidecar, announcer, store, _ = make_sidecar()
        await bring_up(sidecar, "dns")
        await sidecar.handle(WithdrawRequest("dns", "rollout", "alice", soft=True), ROOT)
        assert announcer.tagged[-1] == KEPT  # kept, tagged: never withdrawn
        assert store.drained["dns"].soft
        svc = sidecar.status("dns")["services"][0]
        assert (svc["state"], svc["path"], svc["maintenance"]["soft"]) == ("maintenance", "graceful-shutdown", True)
        metrics = generate_latest(sidecar.metrics.registry).decode()
        assert 'anycastd_service_graceful_shutdown{service="dns"} 1.0' in metrics
        assert 'anycastd_service_maintenance{service="dns"} 1.0' in metrics
        await feed(sidecar, "dns", HARD)  # a real failure: withdrawn
        assert announcer.tagged[-1] == GONE
        await bring_up(sidecar, "dns")
        assert announcer.tagged[-1] == KEPT
        # a restart reads the soft drain back: tagged from the first passing probe
        again, announcer2, _, _ = make_sidecar(store=store)
        again.restore_maintenance()
        await bring_up(again, "dns")
        assert announcer2.tagged[-1] == KEPT
        await again.handle(AnnounceRequest("dns"), ROOT)
        assert announcer2.tagged[-1] == PLAIN_PATH

    asyncio.run(go())


def test_a_drain_that_cannot_be_saved_still_withdraws_and_warns() -> None:
    async def go() -> None:
        sidecar, announcer, store, _ = make_sidecar()
        await bring_up(sidecar, "dns")
        store.broken = "disk full"
        reply = await sidecar.handle(WithdrawRequest(None, "x"), ROOT)
        assert isinstance(reply, WithdrawReply)
        assert reply.warning == "disk full; withdrawn now, but a restart of anycastd would announce again"
        assert announcer.calls[-1] == ("dns", False)
        with pytest.raises(ControlError, match="disk full; nothing was changed: the services stay withdrawn"):
            await sidecar.handle(AnnounceRequest("dns"), ROOT)
        assert sidecar.health["dns"].state is State.MAINTENANCE and announcer.announced == {}

    asyncio.run(go())


def test_unknown_service_names_the_configured_ones() -> None:
    sidecar, _, _, _ = make_sidecar(TWO)
    with pytest.raises(ControlError, match=r"no service 'dsn' \(configured: dns, ntp\)"):
        asyncio.run(sidecar.handle(WithdrawRequest("dsn", "typo"), ROOT))
    assert sidecar.maintenance == {}


def test_withdraw_wait_reports_the_measured_drain() -> None:
    async def go() -> None:
        counts: Iterator[int] = itertools.chain([100, 140, 141], itertools.repeat(141))
        sidecar, _, _, fake = make_sidecar(meter=InMemoryMeter(lambda _: next(counts)))
        await bring_up(sidecar, "dns")
        started = fake.now
        reply = await sidecar.handle(WithdrawRequest("dns", "x", wait=True), ROOT)
        assert isinstance(reply, WithdrawReply) and reply.drain is not None
        assert reply.drain.drained is True and reply.drain.method == "nftables"
        assert reply.drain.packets == 41
        assert fake.now - started == pytest.approx(0.2 + sidecar.config.drain.quiet)
        sidecar.config = dataclasses.replace(sidecar.config, drain=DrainSettings(timeout=0.5))
        counts = itertools.count(200, 7)  # never quiet
        reply = await sidecar.handle(WithdrawRequest("dns", "x", wait=True), ROOT)
        assert isinstance(reply, WithdrawReply) and reply.drain is not None
        assert reply.drain.verdict == "timed_out" and (reply.drain.packets or 0) > 0

    asyncio.run(go())


def test_check_probes_now_without_moving_the_state() -> None:
    async def go() -> None:
        sidecar, _, _, _ = make_sidecar()
        reply = await sidecar.handle(CheckRequest("dns"), ROOT)
        assert isinstance(reply, CheckReply)
        assert reply.checks[0].ok is True and reply.checks[0].latency_ms == 1.0
        assert sidecar.health["dns"].checks[0].passes == 0

    asyncio.run(go())


def test_reload_keeps_unchanged_services_and_restarts_changed_ones() -> None:
    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(TWO)
        await bring_up(sidecar, "dns")
        await bring_up(sidecar, "ntp")
        calls = len(announcer.calls)
        new = parse(TWO + "        rise: 2\n", "anycastd.yaml")
        assert new.service("dns") == sidecar.config.service("dns") and new.service("ntp").checks[0].rise == 2
        summary = await sidecar.reload(new)
        assert summary == {"added": [], "changed": ["ntp"], "retagged": [], "removed": [], "unchanged": ["dns"]}
        assert announcer.calls[calls:] == [("ntp", False)]  # dns untouched: no flap
        assert sidecar.health["dns"].announced and sidecar.health["ntp"].state is State.DOWN
        await bring_up(sidecar, "ntp")  # its new checks pass rise (2) times: announced again
        assert announcer.calls[-1] == ("ntp", True)
        summary = await sidecar.reload(parse(GOOD, "anycastd.yaml"))
        assert summary == {"added": [], "changed": [], "retagged": [], "removed": ["ntp"], "unchanged": ["dns"]}
        assert "ntp" not in sidecar.health and announcer.calls[-1] == ("ntp", False)
        summary = await sidecar.reload(parse(TWO, "anycastd.yaml"))
        assert summary["added"] == ["ntp"] and sidecar.health["ntp"].state is State.DOWN
        assert announcer.announced.keys() == {"dns"}

    asyncio.run(go())


PREFIXES = "    prefixes: [203.0.113.53/32"
WEIGHT = "    weight: "


def test_a_reload_that_changes_only_bgp_attributes_re_announces_without_a_flap() -> None:
    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(GOOD)
        await bring_up(sidecar, "dns")
        calls = len(announcer.calls)
        steer = GOOD.replace(
            "    prefixes: [203.0.113.53/32",
            '    bgp: {med: 200, communities: ["64500:200"]}\n    prefixes: [203.0.113.53/32',
        )
        summary = await sidecar.reload(parse(steer, "anycastd.yaml"))
        assert summary["retagged"] == ["dns"] and summary["changed"] == []
        assert announcer.calls[calls:] == [("dns", True)]  # announced again, never withdrawn
        assert announcer.attributes["dns"] == RouteAttributes(("64500:200",), (), 200, 0)
        assert sidecar.health["dns"].announced  # the same state: no rise to wait for

    asyncio.run(go())


def test_a_weight_is_announced_shown_and_changed_by_a_reload_without_a_flap() -> None:
    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(
            GOOD.replace("    prefixes: [203.0.113.53/32", WEIGHT + "3\n" + PREFIXES)
        )
        await bring_up(sidecar, "dns")
        assert announcer.attributes["dns"].weight == 3
        svc = sidecar.status("dns")["services"][0]
        assert svc["weight"] == {"value": 3, "configured": 3, "why": "configured"}
        assert 'anycastd_weight{service="dns"} 3.0' in generate_latest(sidecar.metrics.registry).decode()
        calls = len(announcer.calls)
        summary = await sidecar.reload(parse(GOOD.replace(PREFIXES, WEIGHT + "1\n" + PREFIXES), "anycastd.yaml"))
        assert summary["retagged"] == ["dns"] and summary["changed"] == []
        assert announcer.calls[calls:] == [("dns", True)] and announcer.attributes["dns"].weight == 1
        await sidecar.reload(parse(GOOD, "anycastd.yaml"))  # no weight: no link bandwidth, no metric
        assert announcer.attributes["dns"] == PLAIN and sidecar.status("dns")["services"][0]["weight"] is None
        assert "anycastd_weight{" not in generate_latest(sidecar.metrics.registry).decode()

    asyncio.run(go())


def test_a_slow_resolver_sheds_load_through_its_weight_and_gets_it_back() -> None:
    degradable = GOOD.replace(PREFIXES, WEIGHT + "10\n    degraded_weight: 2\n" + PREFIXES).replace(
        "        timeout: 0.25\n", "        timeout: 0.25\n        degraded_when: {latency_ms: 50, window: 3}\n", 1
    )
    slow = ProbeResult(Outcome.OK, "NOERROR in 80 ms", 0.080, "192.0.2.10")

    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(degradable)
        service = sidecar.config.service("dns")
        await bring_up(sidecar, "dns")
        assert announcer.attributes["dns"].weight == 10
        for _ in range(3):
            await sidecar.degrade(service, 0, slow)
        assert announcer.attributes["dns"].weight == 2 and announcer.calls[-1] == ("dns", True)  # never withdrawn
        weight = sidecar.status("dns")["services"][0]["weight"]
        assert (weight["value"], weight["configured"], weight["level"], weight["changes"]) == (2, 10, "degraded", 1)
        assert weight["why"].startswith("degraded: checks[0]: median latency 80.0 ms over 3 probes")
        assert status_code({**sidecar.status(), "bgp": {"192.0.2.9": "up"}}) == EXIT_DEGRADED
        metrics = generate_latest(sidecar.metrics.registry).decode()
        assert 'anycastd_weight{service="dns"} 2.0' in metrics
        assert 'anycastd_degraded_transitions_total{service="dns",to="degraded"} 1.0' in metrics
        for _ in range(3):
            await sidecar.degrade(service, 0, OK)
        assert announcer.attributes["dns"].weight == 10
        assert sidecar.status("dns")["services"][0]["weight"]["why"] == "configured"
        assert status_code({**sidecar.status(), "bgp": {"192.0.2.9": "up"}}) == EXIT_OK
        # a withdrawn service is not announced by a change of weight; it takes the weight when announced
        await feed(sidecar, "dns", HARD)
        calls = len(announcer.calls)
        for _ in range(3):
            await sidecar.degrade(service, 0, slow)
        assert len(announcer.calls) == calls and sidecar.weight_of("dns") == 2
        await bring_up(sidecar, "dns")
        assert announcer.attributes["dns"].weight == 2
        await sidecar.reload(parse(GOOD.replace("  dns:\n", "  dot:\n", 1), "anycastd.yaml"))  # dns removed
        assert "dns" not in sidecar.degradation and "dns" not in sidecar.health

    asyncio.run(go())


def test_reload_refuses_what_only_a_restart_can_do_and_changes_nothing() -> None:
    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(TWO)
        await bring_up(sidecar, "dns")
        before = sidecar.config
        with pytest.raises(ConfigError) as info:
            await sidecar.reload(parse(GOOD.replace("local_asn: 65001", "local_asn: 65002"), "new.yaml"))
        assert info.value.problems == ["new.yaml: local_asn changed; only a restart of anycastd applies that"]
        assert sidecar.config is before and "ntp" in sidecar.health and announcer.calls == [("dns", True)]

    asyncio.run(go())


def test_metrics_read_the_live_state() -> None:
    async def go() -> bytes:
        sidecar, _, _, _ = make_sidecar()
        await bring_up(sidecar, "dns")
        sidecar.metrics.probe("dns", 0, True, "ok", 0.0007)
        sidecar.metrics.probe("dns", 0, False, "timeout", None)
        await sidecar.handle(WithdrawRequest("dns", "x"), ROOT)
        return generate_latest(sidecar.metrics.registry)

    text = asyncio.run(go()).decode()
    assert 'anycastd_service_state{service="dns",state="maintenance"} 1.0' in text
    assert 'anycastd_service_state{service="dns",state="up"} 0.0' in text
    assert 'anycastd_service_announced{service="dns"} 0.0' in text
    assert 'anycastd_service_maintenance{service="dns"} 1.0' in text
    assert 'anycastd_probe_failures_total{check="0",reason="timeout",service="dns"} 1.0' in text
    assert 'anycastd_probe_duration_seconds_bucket{check="0",le="0.001",service="dns"} 1.0' in text
    assert 'anycastd_transitions_total{service="dns",to="maintenance"} 1.0' in text
    assert 'anycastd_transitions_total{service="dns",to="up"} 1.0' in text


GSHUT = GOOD.replace(
    "    prefixes: [203.0.113.53/32", "    failure_action: graceful-shutdown\n    prefixes: [203.0.113.53/32"
)


def test_graceful_shutdown_keeps_the_failing_path_tagged_and_stopping_withdraws_it() -> None:
    announcer = InMemoryAnnouncer()
    sidecar, _, _, _ = run_sidecar([HARD, OK, OK, OK, HARD, OK, OK, OK, HARD], announcer, text=GSHUT)
    assert announcer.tagged == [
        (True, ()),  # after rise: announced (the failure before it announced nothing)
        (True, ("65535:0",)),  # failing: kept, tagged GRACEFUL_SHUTDOWN
        (True, ()),  # recovered: plain again
        (True, ("65535:0",)),
        (False, ()),  # stopping withdraws, whatever the failure action
    ]
    status = sidecar.status()["services"][0]
    assert status["failure_action"] == "graceful-shutdown"


def test_status_and_metrics_show_the_tagged_path_and_the_damping_penalty() -> None:
    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(GSHUT)
        await bring_up(sidecar, "dns")
        await feed(sidecar, "dns", HARD)
        svc = sidecar.status("dns")["services"][0]
        assert (svc["path"], svc["healthy"], svc["announced"]) == ("graceful-shutdown", False, False)
        assert svc["damping"]["penalty"] == 1000 and svc["damping"]["suppressed"] is False
        assert svc["damping"]["suppressed_until"] is None
        assert announcer.communities == {"dns": ("65535:0",)}
        metrics = generate_latest(sidecar.metrics.registry).decode()
        assert 'anycastd_service_graceful_shutdown{service="dns"} 1.0' in metrics
        assert 'anycastd_damping_penalty{service="dns"} 1000.0' in metrics
        assert 'anycastd_damping_suppressed{service="dns"} 0.0' in metrics

    asyncio.run(go())


def test_a_flapping_resolver_is_suppressed_and_announce_clears_it() -> None:
    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar()
        await bring_up(sidecar, "dns")
        for _ in range(3):
            await feed(sidecar, "dns", HARD)
            await bring_up(sidecar, "dns")
        health = sidecar.health["dns"]
        assert health.suppressed and health.healthy and announcer.announced == {}
        svc = sidecar.status("dns")["services"][0]
        assert svc["damping"]["suppressed"] is True and svc["damping"]["suppressed_until"] is not None
        reply = await sidecar.handle(AnnounceRequest("dns"), ROOT)
        assert reply == AnnounceReply((), ("dns",), ("dns",))
        assert not health.suppressed and "dns" in announcer.announced

    asyncio.run(go())


class Triggered:
    """Triggers that wake every watched probe at once, and say they did; forgotten probes are counted."""

    def __init__(self) -> None:
        self.watched: list[str] = []
        self.forgotten: list[str] = []
        self.closed = False
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1

    def watch(self, probe: Watched) -> tuple[str, str | None]:
        self.watched.append(probe.key)
        probe.wake = asyncio.Event()
        probe.wake.set()
        return "test events", None

    def forget(self, probe: Watched) -> None:
        self.forgotten.append(probe.key)

    def close(self) -> None:
        self.closed = True


def test_a_trigger_wakes_a_probe_and_status_names_the_detection_method() -> None:
    fake = FakeTime()
    triggers = Triggered()

    async def go() -> Sidecar:
        stop = asyncio.Event()
        announcer = InMemoryAnnouncer()
        sidecar = Sidecar(
            parse(GOOD),
            announcer,
            InMemoryAddresses(),
            ScriptedProber([OK], stop, announcer),
            Liveness(fake.clock),
            store=InMemoryStore(),
            meter=InMemoryMeter(),
            clock=fake.clock,
            sleep=fake.sleep,
            jitter=lambda _: 3600.0,  # the schedule alone would not probe for an hour
        )
        sidecar.triggers = triggers
        await sidecar.run(stop)
        return sidecar

    sidecar = asyncio.run(go())
    check = sidecar.status()["services"][0]["checks"][0]
    assert check["woken"] == 1 and check["probes"] == 1 and fake.now < 1000.0 + 3600
    assert (check["detection"], check["detection_note"]) == ("test events", None)
    assert triggers.watched == triggers.forgotten == ["dns/checks[0]"] and triggers.closed
    assert triggers.ticks == 3  # every round ticks them, before its probe: the one answered and the one left hanging


def test_without_triggers_status_says_the_checks_are_polled_and_why() -> None:
    sidecar, _, _, _ = make_sidecar()
    for service in sidecar.config.services:
        assert sidecar.triggers.watch(
            Probe("x", 0, service.checks[0], (), sidecar.health[service.name], CheckStatus())
        ) == (
            "polling",
            "no event source was given",
        )


def test_with_require_any_one_passing_check_keeps_the_service_announced() -> None:
    text = GOOD.replace(
        "        timeout: 0.25\n",
        "        timeout: 0.25\n      - {address: 192.0.2.10, qname: health.example, protocol: tcp}\n    require: any\n",
    )

    async def go() -> None:
        sidecar, announcer, _, _ = make_sidecar(text)
        service = sidecar.config.service("dns")
        health = sidecar.health["dns"]
        assert (service.require, health.needed) == (1, 1)
        await bring_up(sidecar, "dns")  # checks[0] alone rises: one of two is enough
        assert announcer.announced and health.state is State.UP
        await sidecar.apply(service, health.feed(1, HARD.for_health(), sidecar.clock()))
        assert announcer.announced and health.announced  # checks[1] down, checks[0] still passes
        assert sidecar.status()["services"][0]["require"] == 1
        await sidecar.apply(service, health.feed(0, HARD.for_health(), sidecar.clock()))
        assert not announcer.announced and sidecar.status()["services"][0]["state"] == "down"

    asyncio.run(go())


def test_services_with_the_same_check_share_one_probe_a_round_and_one_flush() -> None:
    text = SHARED.split("  slow:")[0]
    _, announcer, prober, _ = run_sidecar([OK, OK, OK, HARD], text=text)
    v4, v6, dot = (ipaddress.ip_address(a) for a in ("203.0.113.53", "2001:db8::53", "203.0.113.54"))
    # one round asks every address once: the check's own, then each service's
    assert prober.rounds == [(ipaddress.ip_address("192.0.2.10"), v4, v6, dot)] * 5
    # both rise together and fall together, each round's changes flushed at once
    assert announcer.calls == [("dns", True), ("dot", True), ("dns", False), ("dot", False)]
    assert announcer.flushes == 4 + 1  # a flush per round that gave results, and the stop's


def test_groups_are_by_check_and_a_reload_moves_members_in_and_out() -> None:
    async def go() -> None:
        sidecar, _, _, _ = make_sidecar(SHARED)
        sidecar.loops.arm()
        sidecar._start_services(sidecar.config.services)

        def groups() -> list[list[str]]:
            return sorted(sorted(m.key for m in g.members) for g in sidecar._groups.values())

        assert groups() == [["dns/checks[0]", "dot/checks[0]"], ["slow/checks[0]"]]
        group = next(g for g in sidecar._groups.values() if len(g.members) == 2)
        assert group.targets() == [
            ipaddress.ip_address(a) for a in ("192.0.2.10", "203.0.113.53", "2001:db8::53", "203.0.113.54")
        ]
        await sidecar.reload(parse(SHARED.split("  dot:")[0] + "  slow:" + SHARED.split("  slow:")[1], "anycastd.yaml"))
        assert groups() == [["dns/checks[0]"], ["slow/checks[0]"]]  # dot left its group; the group goes on
        await sidecar.reload(parse(SHARED, "anycastd.yaml"))
        assert groups() == [["dns/checks[0]", "dot/checks[0]"], ["slow/checks[0]"]]
        await sidecar.reload(parse(GOOD, "anycastd.yaml"))
        assert groups() == [["dns/checks[0]"]] and len(sidecar._group_tasks) == 1  # slow's loop stopped
        await sidecar._stop_services({"dns"})
        assert sidecar._groups == {} and sidecar._group_tasks == {} and sidecar._owner == {}

    asyncio.run(go())


def test_the_first_check_started_probes_at_once_and_the_next_ones_spread_over_the_interval() -> None:
    delays = FirstDelays()
    firsts = [delays(0.2) for _ in range(10)]
    assert firsts[0] == 0.0
    assert all(0.0 <= d < 0.2 for d in firsts)
    # Ten starts leave no gap on the interval's circle wider than two tenths of it, and none closer than a 40th.
    ordered = sorted(firsts)
    gaps = [b - a for a, b in zip(ordered, [*ordered[1:], ordered[0] + 0.2], strict=True)]
    assert max(gaps) < 0.2 * 2 / 10 and min(gaps) > 0.2 / 40, gaps
    assert FirstDelays()(1.0) == 0.0  # each sidecar counts its own
