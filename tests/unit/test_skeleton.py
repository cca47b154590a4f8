"""The skeleton both daemons run on: the probe schedule, waking a probe early, and the maintenance book."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from anycastd.checks.dns import ProbeResult
from anycastd.config.checks import Check
from anycastd.core.damping import DampingSettings
from anycastd.core.health import Decision, Outcome, Result, ServiceHealth, State, Thresholds, Transition
from anycastd.core.net import IPAddress
from anycastd.daemons.skeleton import (
    CONFIRM_TIMEOUT,
    STALL_SLACK,
    Liveness,
    Loops,
    MaintenanceBook,
    Probe,
    SharedProbe,
    confirming,
    lift_and_forgive,
    log_decision,
    new_health,
    probe_forever,
    probe_shared_forever,
    stall_after,
    who,
)
from anycastd.daemons.state import InMemoryStore, Maintenance, StateError
from anycastd.daemons.status import CheckStatus
from anycastd.peer import Peer
from tests.unit.fake_time import FakeTime, until

sidecar_log = logging.getLogger("anycastd.daemons.sidecar")
A = ipaddress.ip_address("192.0.2.10")
CHECK = Check(A, interval=1.0, timeout=0.5)
OK = ProbeResult(Outcome.OK, "NOERROR", 0.001, "192.0.2.10")

T = TypeVar("T")


async def alongside(task: asyncio.Future[Any], awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result; if the loop under test ends first (it only ends by raising), its error instead."""
    waiter = asyncio.ensure_future(awaitable)
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        task.result()
        raise AssertionError("the probe loop ended")
    return waiter.result()


def _probe(wake: asyncio.Event | None = None) -> Probe:
    # rise 1: a passing check is never in doubt, so these tests see the schedule alone
    health = ServiceHealth.create("dns", [Thresholds(1, 2, 1)])
    return Probe("dns/checks[0]", 0, CHECK, (), health, CheckStatus(), wake)


class TimedProber:
    """Records when each probe started; each takes ``took`` seconds of fake time; stops after ``count``."""

    def __init__(self, fake: FakeTime, took: Sequence[float], done: asyncio.Event) -> None:
        self.fake, self.took, self.done = fake, list(took), done
        self.started: list[float] = []

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        self.started.append(self.fake.now)
        if not self.took:
            self.done.set()
            await asyncio.Event().wait()  # until cancelled
        self.fake.now += self.took.pop(0)
        return OK


def _run(took: Sequence[float], jitter: float) -> tuple[list[float], list[Decision], Probe]:
    fake = FakeTime()
    decisions: list[Decision] = []
    probe = _probe()

    async def go() -> list[float]:
        done = asyncio.Event()
        prober = TimedProber(fake, took, done)

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            decisions.append(decision)

        task = asyncio.ensure_future(
            probe_forever(probe, prober, on_result, clock=fake.clock, sleep=fake.sleep, jitter=lambda _: jitter)
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return [t - 1000.0 for t in prober.started]

    return asyncio.run(go()), decisions, probe


def test_probes_keep_to_the_schedule_from_when_each_was_due() -> None:
    started, decisions, probe = _run([0.1, 0.3, 0.2], jitter=0.25)
    assert started == pytest.approx([0.25, 1.25, 2.25, 3.25])  # the probe's own duration does not drift it
    assert probe.status.probes == 3 and probe.status.failures == 0
    assert probe.health.state is State.UP and len(decisions) == 3


def test_a_late_probe_starts_a_new_schedule_instead_of_a_burst() -> None:
    started, _, _ = _run([0.1, 3.5, 0.1, 0.1], jitter=0.0)
    # the second probe took 3.5 s: the third starts at once, then every second from there, never in a burst
    assert started == pytest.approx([0.0, 1.0, 4.5, 5.5, 6.5])


def test_a_wake_event_gets_a_probe_at_once_and_restarts_the_schedule() -> None:
    async def go() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        probe = _probe(wake)
        probed = asyncio.Queue[float]()
        released = asyncio.Event()

        class Prober:
            async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
                await probed.put(loop.time())
                return OK

        async def long_sleep(seconds: float) -> None:
            await released.wait()  # the schedule's sleeps never end by themselves here

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(probe, Prober(), on_result, clock=loop.time, sleep=long_sleep, jitter=lambda _: 60.0)
        )
        wake.set()  # before the first probe is due: it goes at once
        first = await alongside(task, probed.get())
        wake.set()  # and again while the loop sleeps
        second = await alongside(task, probed.get())
        assert not wake.is_set()  # consumed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return [first, second], probe.status.probes

    _, probes = asyncio.run(go())
    assert probes == 2  # each wake gave one probe; the schedule alone would have given none


def test_a_beat_is_given_before_the_first_probe_and_every_round() -> None:
    fake = FakeTime()
    beats: list[float] = []

    async def go() -> None:
        done = asyncio.Event()
        prober = TimedProber(fake, [0.1, 0.1], done)

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(
                _probe(), prober, on_result, clock=fake.clock, sleep=fake.sleep, jitter=lambda _: 0.5,
                beat=lambda p: beats.append(fake.now),
            )
        )  # fmt: skip
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert [b - 1000.0 for b in beats] == pytest.approx([0.0, 0.5, 1.5, 2.5])


def test_the_book_drains_persists_and_lifts_in_order() -> None:
    store = InMemoryStore()
    book = MaintenanceBook(store, wall=lambda: 1.0)
    assert book.drain(["b", "a"], "upgrade", "root") is None
    assert store.drained == {"b": Maintenance("upgrade", "root", 1.0), "a": Maintenance("upgrade", "root", 1.0)}
    assert "a" in book and book.get("c") is None
    assert book.lift(["c", "a", "b"], everything=False) == ["a", "b"]
    assert store.drained == {} and book.entries == {}


def test_a_book_that_cannot_be_saved_still_drains_but_never_lifts() -> None:
    store = InMemoryStore()
    book = MaintenanceBook(store, wall=lambda: 1.0)
    book.drain(["a"], "r", "root")
    store.broken = "disk full"
    assert book.drain(["b"], "r", "root") == "disk full"  # applied, with a warning
    assert set(book.entries) == {"a", "b"}
    with pytest.raises(StateError, match="disk full"):
        book.lift(["a"], everything=True)
    assert set(book.entries) == {"a", "b"}  # nothing changed


def test_an_unreadable_book_drains_every_name_and_says_why_until_everything_is_lifted() -> None:
    store = InMemoryStore(broken="maintenance.json: not JSON")
    book = MaintenanceBook(store, wall=lambda: 1.0)
    entries = book.restore(["dns", "ntp"], "anycastctl announce")
    assert set(entries) == {"dns", "ntp"} and book.problem == "maintenance.json: not JSON"
    assert entries["dns"].reason == "maintenance state unreadable: maintenance.json: not JSON"
    store.broken = None
    assert book.lift(["dns"], everything=False) == ["dns"] and book.problem is not None
    assert book.lift(["ntp"], everything=True) == ["ntp"] and book.problem is None


# Named by the mutants of `make mutation` they kill (docs/architecture.md#mutation-testing).


class GatedTime:
    """A clock that moves only when the test says, and sleeps that end only when the test says (or are cut)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.asked: list[float] = []
        self.gate = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.gate.wait()
        self.gate.clear()
        self.now += seconds


def test_the_schedule_is_anchored_to_due_times_even_when_sleeps_overshoot() -> None:
    """A sleep that ends late (a busy host) must not push every later probe back: no drift."""
    fake = FakeTime()

    async def go() -> list[float]:
        done = asyncio.Event()
        prober = TimedProber(fake, [0.0, 0.0, 0.0], done)

        async def late_sleep(seconds: float) -> None:
            await fake.sleep(seconds + 0.1)

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(_probe(), prober, on_result, clock=fake.clock, sleep=late_sleep, jitter=lambda _: 0.0)
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return [t - 1000.0 for t in prober.started]

    assert asyncio.run(go()) == pytest.approx([0.1, 1.2, 2.2, 3.2])  # each 0.1 late, never later


def test_the_probe_the_time_and_the_jitter_are_the_ones_of_this_check() -> None:
    fake = FakeTime()
    asked: list[float] = []
    seen: list[Probe] = []
    probe = _probe()

    async def go() -> None:
        done = asyncio.Event()
        prober = TimedProber(fake, [0.0], done)

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            seen.append(p)

        def jitter(interval: float) -> float:
            asked.append(interval)
            return 0.0

        task = asyncio.ensure_future(
            probe_forever(probe, prober, on_result, clock=fake.clock, sleep=fake.sleep, jitter=jitter)
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert asked == [CHECK.interval] and seen == [probe]
    assert probe.health.checks[0].since == 1000.0  # the clock's time reached the health core


def test_after_a_wake_the_schedule_starts_again_from_that_probe() -> None:
    async def go() -> GatedTime:
        time = GatedTime()
        wake = asyncio.Event()
        probe = _probe(wake)
        probed = asyncio.Queue[float]()

        class Prober:
            async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
                await probed.put(time.now)
                return OK

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(probe, Prober(), on_result, clock=time.clock, sleep=time.sleep, jitter=lambda _: 0.5)
        )
        await until(lambda: len(time.asked) == 1, "the first sleep")
        time.gate.set()  # the jitter passes: first probe at 0.5
        assert await alongside(task, probed.get()) == 0.5
        await until(lambda: len(time.asked) == 2, "the sleep to the next due time")
        time.now = 0.8
        wake.set()  # woken 0.3 s into a 1 s wait: a probe now, and the next one due 1 s later
        assert await alongside(task, probed.get()) == 0.8
        await until(lambda: len(time.asked) == 3, "the sleep after the woken probe")
        time.gate.set()
        assert await alongside(task, probed.get()) == 1.8  # the schedule went on (it did not break)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return time

    time = asyncio.run(go())
    assert time.asked[:3] == pytest.approx([0.5, 1.0, 1.0])


def test_who_is_the_kernels_answer_with_the_sudo_user_when_there_is_one() -> None:
    root = Peer(1, 0)
    assert who(root, "") == "root"
    assert who(root, "root") == "root"
    assert who(root, "alice") == "root (sudo by alice)"


def test_a_fresh_book_has_no_problem_and_finds_its_entries(caplog: pytest.LogCaptureFixture) -> None:
    book = MaintenanceBook(InMemoryStore({"a": Maintenance("r", "w", 1.0)}), wall=lambda: 2.0)
    assert book.problem is None
    book.restore(["a"], "anycastctl announce")
    assert book.get("a") == Maintenance("r", "w", 1.0)
    broken = MaintenanceBook(InMemoryStore(broken="maintenance.json: not JSON"), wall=lambda: 2.0)
    with caplog.at_level(logging.ERROR, logger="anycastd.daemons.skeleton"):
        entries = broken.restore(["a"], "anycastctl announce --all")
    assert entries["a"].who == "anycastd" and entries["a"].since == 2.0
    assert caplog.messages == [
        "maintenance.json: not JSON. Everything stays drained until `anycastctl announce --all` (check the file "
        "first: an operator may have drained this node)",
        "maintenance.json: not JSON",  # and saving the withdraw-everything book failed too
    ]


class ScriptedProber:
    """Answers from a script of (outcome, seconds taken), recording when each probe started and its timeout."""

    def __init__(self, fake: FakeTime, script: Sequence[tuple[Outcome, float]], done: asyncio.Event) -> None:
        self.fake, self.script, self.done = fake, list(script), done
        self.calls: list[tuple[float, float]] = []

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        self.calls.append((round(self.fake.now - 1000.0, 6), check.timeout))
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()
        outcome, took = self.script.pop(0)
        self.fake.now += took
        return ProbeResult(outcome, outcome.value, took if outcome is Outcome.OK else None, "192.0.2.10")


def _scripted(
    script: Sequence[tuple[Outcome, float]], thresholds: Thresholds, urgent: bool = False
) -> tuple[list[tuple[float, float]], Probe]:
    fake = FakeTime()
    probe = Probe("dns/checks[0]", 0, CHECK, (), ServiceHealth.create("dns", [thresholds]), CheckStatus())
    probe.urgent = urgent

    async def go() -> list[tuple[float, float]]:
        done = asyncio.Event()
        prober = ScriptedProber(fake, script, done)

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(probe, prober, on_result, clock=fake.clock, sleep=fake.sleep, jitter=lambda _: 0.0)
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return prober.calls

    return asyncio.run(go()), probe


OK_, FAIL = (Outcome.OK, 0.001), (Outcome.FAIL, 0.5)


def test_a_probe_that_timed_out_is_confirmed_at_once_with_a_third_of_the_timeout() -> None:
    # interval 1 s, timeout 0.5 s, fall 3: UP, then a freeze. The failure took the full timeout, so the
    # first confirming probe is overdue and goes at once; each confirming probe waits a third of the timeout.
    third = 0.5 / 3
    calls, probe = _scripted([OK_, FAIL, (Outcome.FAIL, third), (Outcome.FAIL, third), OK_], Thresholds(1, 3, 1))
    starts, timeouts = zip(*calls, strict=True)
    assert starts == pytest.approx((0.0, 1.0, 1.5, 1.75, 2.75, 3.75))
    assert timeouts == pytest.approx((0.5, 0.5, third, third, 0.5, 0.5))
    # DOWN after the third failure is no longer in doubt: the schedule again, with the full timeout
    assert probe.status.confirming == 2 and probe.status.woken == 0


def test_a_quick_failure_is_confirmed_a_quarter_interval_after_it_started() -> None:
    quick = (Outcome.FAIL, 0.01)  # an answer that does not match: no timeout to wait out
    calls, _ = _scripted([OK_, quick, quick, OK_, OK_], Thresholds(1, 3, 1))
    starts = [at for at, _ in calls]
    assert starts == pytest.approx([0.0, 1.0, 1.25, 1.5, 2.5, 3.5])  # UP again after the third: the schedule


def test_a_rising_check_keeps_its_schedule_so_a_flapping_resolver_stays_out() -> None:
    calls, probe = _scripted([OK_, OK_, OK_, OK_], Thresholds(3, 3, 1))
    starts, timeouts = zip(*calls, strict=True)
    assert starts == pytest.approx((0.0, 1.0, 2.0, 3.0, 4.0))
    assert set(timeouts) == {0.5}
    assert probe.health.state is State.UP and probe.status.confirming == 0


def test_an_urgent_probe_waits_a_confirming_probes_timeout_once() -> None:
    # a stuck queue (anycastd.watch.sockdiag) marks the probe urgent: the clients' queries are already waiting
    third = 0.5 / 3
    calls, probe = _scripted([OK_, OK_, OK_], Thresholds(1, 3, 1), urgent=True)
    starts, timeouts = zip(*calls, strict=True)
    assert timeouts == pytest.approx((third, 0.5, 0.5, 0.5))
    assert starts == pytest.approx((0.0, 1.0, 2.0, 3.0))  # passing: the schedule is unchanged
    assert not probe.urgent and probe.status.confirming == 1


class FirstHangs:
    """A resolver that froze under the first probe (it never answers it) and answers every later one."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []
        self.started = asyncio.Event()
        self._hung = asyncio.Event()

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        self.timeouts.append(check.timeout)
        self.started.set()
        if len(self.timeouts) == 1:
            await self._hung.wait()
        return OK


def test_hurry_abandons_a_probe_waiting_the_full_timeout_for_an_urgent_one() -> None:
    async def go() -> tuple[list[float], Probe, bool]:
        loop = asyncio.get_running_loop()
        probe = _probe(asyncio.Event())
        prober = FirstHangs()
        timeouts = prober.timeouts

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(probe, prober, on_result, clock=loop.time, sleep=asyncio.sleep, jitter=lambda _: 0.0)
        )
        await alongside(task, prober.started.wait())
        assert probe.inflight is not None  # the full timeout: it may be hurried
        probe.hurry()  # the clients' queue is stuck
        await alongside(task, until(lambda: probe.status.probes == 1, "the urgent probe"))
        assert not probe.wake.is_set()  # consumed by the urgent probe, not left for another
        task.cancel()  # a shutdown is not a hurry: it ends the loop
        await asyncio.gather(task, return_exceptions=True)
        return timeouts, probe, task.cancelled()

    timeouts, probe, cancelled = asyncio.run(go())
    assert timeouts == pytest.approx([0.5, 0.5 / 3])
    assert probe.status.probes == 1 and probe.status.confirming == 1  # the abandoned one is not counted
    assert probe.status.woken == 1  # the urgent probe was brought forward: counted as woken
    assert cancelled and probe.inflight is None


def test_a_probe_woken_and_then_hurried_counts_both_wake_ups() -> None:
    async def go() -> Probe:
        loop = asyncio.get_running_loop()
        probe = _probe(asyncio.Event())
        assert probe.wake is not None
        probe.wake.set()  # an event before the first round: it starts woken
        prober = FirstHangs()

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(probe, prober, on_result, clock=loop.time, sleep=asyncio.sleep, jitter=lambda _: 5.0)
        )
        await alongside(task, prober.started.wait())
        probe.hurry()
        await alongside(task, until(lambda: probe.status.probes == 1, "the urgent probe"))
        assert probe.status.woken == 2  # the event that started the round, and the hurry
        probe.wake.set()  # and one more event: a round of its own
        await alongside(task, until(lambda: probe.status.probes == 2, "the woken probe"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return probe

    assert asyncio.run(go()).status.woken == 3  # counted over the rounds


B = ipaddress.ip_address("203.0.113.53")
C = ipaddress.ip_address("203.0.113.54")
HARD = ProbeResult(Outcome.HARD_FAIL, "203.0.113.54: connection refused", None, "203.0.113.54", "refused")


def test_probe_forever_asks_for_the_probes_own_addresses_and_beats_for_it() -> None:
    async def go() -> tuple[list[tuple[IPAddress, ...]], list[Probe], Probe]:
        fake = FakeTime()
        health = ServiceHealth.create("dns", [Thresholds(1, 2, 1)])
        probe = Probe("dns/checks[0]", 0, CHECK, (B,), health, CheckStatus())
        asked: list[tuple[IPAddress, ...]] = []
        beats: list[Probe] = []
        done = asyncio.Event()

        class Prober:
            async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
                asked.append(tuple(service_addresses))
                if len(asked) == 3:
                    done.set()
                    await asyncio.Event().wait()
                return OK

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(
                probe, Prober(), on_result, clock=fake.clock, sleep=fake.sleep, jitter=lambda _: 0.0, beat=beats.append
            )
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return asked, beats, probe

    asked, beats, probe = asyncio.run(go())
    assert asked == [(B,)] * 3
    assert len(beats) >= 3 and all(b is probe for b in beats)


class EachProber:
    """A shared round's prober: ``answers`` by address; records what each round asked."""

    def __init__(self, answers: dict[IPAddress, ProbeResult], rounds: int, done: asyncio.Event) -> None:
        self.answers, self.rounds, self.done = answers, rounds, done
        self.asked: list[list[IPAddress]] = []

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        raise AssertionError("a group of several asks each address on its own")

    async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
        self.asked.append(list(targets))
        if len(self.asked) > self.rounds:
            self.done.set()
            await asyncio.Event().wait()
        return [self.answers[t] for t in targets]


def _shared() -> SharedProbe:
    members = [
        Probe(
            f"{name}/checks[0]", 0, CHECK, (address,), ServiceHealth.create(name, [Thresholds(1, 2, 1)]), CheckStatus()
        )
        for name, address in (("dns", B), ("dot", C))
    ]
    return SharedProbe("dns/checks[0]", CHECK, members)


def test_a_shared_probe_asks_each_address_once_and_judges_each_member_by_its_own() -> None:
    async def go() -> tuple[EachProber, dict[str, list[ProbeResult]], int, SharedProbe]:
        fake = FakeTime()
        shared = _shared()
        done = asyncio.Event()
        prober = EachProber({A: OK, B: OK, C: HARD}, 2, done)
        got: dict[str, list[ProbeResult]] = {}
        flushed = 0

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            got.setdefault(p.key, []).append(result)

        async def after() -> None:
            nonlocal flushed
            flushed += 1

        task = asyncio.ensure_future(
            probe_shared_forever(
                shared,
                prober,
                on_result,
                clock=fake.clock,
                sleep=fake.sleep,
                jitter=lambda _: 0.0,
                beat=lambda _: None,
                after=after,
            )
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return prober, got, flushed, shared

    prober, got, flushed, shared = asyncio.run(go())
    assert prober.asked[0] == [A, B, C] == shared.targets() and shared.service_addresses == (B, C)
    assert got["dns/checks[0]"][0] == OK and got["dot/checks[0]"][0] == HARD  # each by its own address
    assert flushed == 2  # once a round
    assert shared.members[1].health.checks[0].state is State.DOWN


FAST = Check(A, interval=0.2, timeout=0.1)  # 20 service addresses at 0.2 s: a steady round asks 8 of them
MANY = [ipaddress.ip_address(f"203.0.113.{100 + n}") for n in range(20)]


def _many() -> SharedProbe:
    members = [
        Probe(f"s{n}/checks[0]", 0, FAST, (a,), ServiceHealth.create(f"s{n}", [Thresholds(1, 2, 1)]), CheckStatus())
        for n, a in enumerate(MANY)
    ]
    return SharedProbe("s0/checks[0]", FAST, members)


def _rounds(
    shared: SharedProbe, answer: Callable[[int, IPAddress], ProbeResult], rounds: int
) -> tuple[list[list[IPAddress]], list[float]]:
    """What each of ``rounds`` rounds of ``shared`` asked, and each round's timeout; ``answer(round, address)``."""
    asked: list[list[IPAddress]] = []
    timeouts: list[float] = []

    async def go() -> None:
        fake, done = FakeTime(), asyncio.Event()

        class Prober(EachProber):
            async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
                if len(asked) == rounds:
                    done.set()
                    await asyncio.Event().wait()
                asked.append(list(targets))
                timeouts.append(check.timeout)
                return [answer(len(asked) - 1, t) for t in targets]

        async def nothing(*_: Any) -> None:
            pass

        task = asyncio.ensure_future(
            probe_shared_forever(
                shared,
                Prober({}, rounds, done),
                nothing,
                clock=fake.clock,
                sleep=fake.sleep,
                jitter=lambda _: 0.0,
                beat=lambda _: None,
                after=nothing,
            )
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    return asked, timeouts


def test_a_steady_round_asks_the_checks_own_address_and_a_slice_of_the_service_addresses_in_turn() -> None:
    asked, _ = _rounds(_many(), lambda n, a: OK, 5)
    assert asked[0] == [A, *MANY]  # every member down (rise 1): all, so a rise needs every address
    assert asked[1:] == [[A, *MANY[0:8]], [A, *MANY[8:16]], [A, *MANY[16:20], *MANY[0:4]], [A, *MANY[4:12]]]


def test_a_failure_in_a_slice_is_confirmed_by_a_round_that_asks_every_address() -> None:
    def answer(n: int, address: IPAddress) -> ProbeResult:
        return BAD if n >= 1 and address == MANY[5] else OK

    shared = _many()
    asked, timeouts = _rounds(shared, answer, 4)
    assert [len(a) for a in asked] == [21, 9, 21, 21]  # the slice finds it; confirmed on all; down: all
    assert timeouts == [FAST.timeout, FAST.timeout, FAST.timeout * CONFIRM_TIMEOUT, FAST.timeout]
    assert [m.health.checks[0].state for m in shared.members].count(State.UP) == 19
    assert shared.members[5].health.checks[0].state is State.DOWN


def test_a_round_an_event_woke_asks_every_address() -> None:
    shared = _many()
    shared.wake = asyncio.Event()

    def answer(n: int, address: IPAddress) -> ProbeResult:
        if n == 1:
            assert shared.wake is not None
            shared.wake.set()  # the resolver's socket went, say: the next round comes at once
        return OK

    asked, _ = _rounds(shared, answer, 4)
    assert [len(a) for a in asked] == [21, 9, 21, 9]


def test_a_check_of_its_own_asks_a_slice_of_its_addresses_too() -> None:
    many = [ipaddress.ip_address(f"2001:db8:53::{n + 1:x}") for n in range(10)]
    health = ServiceHealth.create("many", [Thresholds(1, 2, 1)])
    shared = SharedProbe("many/checks[0]", FAST, [Probe("many/checks[0]", 0, FAST, tuple(many), health, CheckStatus())])
    asked: list[list[IPAddress]] = []

    async def go() -> None:
        fake, done = FakeTime(), asyncio.Event()

        class Prober(EachProber):
            async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
                if len(asked) == 3:
                    done.set()
                    await asyncio.Event().wait()
                asked.append(list(service_addresses))
                return OK

        async def nothing(*_: Any) -> None:
            pass

        task = asyncio.ensure_future(
            probe_shared_forever(
                shared,
                Prober({}, 3, done),
                nothing,
                clock=fake.clock,
                sleep=fake.sleep,
                jitter=lambda _: 0.0,
                beat=lambda _: None,
                after=nothing,
            )
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert asked == [many, many[:8], [*many[:6], *many[8:]]]  # in the service's order


def test_a_prober_that_answers_for_fewer_addresses_than_asked_ends_the_loop() -> None:
    class Short(EachProber):
        async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
            return [OK]

    async def go() -> None:
        fake = FakeTime()

        async def nothing(*_: Any) -> None:
            pass

        await probe_shared_forever(
            _shared(), Short({}, 1, asyncio.Event()), nothing, clock=fake.clock, sleep=fake.sleep,
            jitter=lambda _: 0.0, beat=lambda _: None, after=nothing,
        )  # fmt: skip

    with pytest.raises(ValueError, match="zip"):
        asyncio.run(go())


def test_hurrying_a_shared_probe_makes_its_next_round_urgent() -> None:
    async def go() -> SharedProbe:
        shared = _shared()
        shared.wake = asyncio.Event()
        shared.inflight = asyncio.get_running_loop().create_future()
        shared.hurry()
        return shared

    shared = asyncio.run(go())
    assert shared.urgent and shared.wake is not None and shared.wake.is_set()
    assert shared.inflight is not None and shared.inflight.cancelled()


# What both daemons share, written once. Named by the mutants of `make mutation` they kill.


def test_a_deadline_met_to_the_instant_is_met_and_forgetting_an_unknown_loop_is_no_error() -> None:
    fake = FakeTime()
    live = Liveness(fake.clock)
    live.beat("a", 1.0)
    fake.now += 1.0
    assert live()  # exactly at the deadline: still alive
    fake.now += 0.001
    assert not live()
    live.forget("never beat")
    live.forget("a")
    assert live()


def test_a_loop_counts_as_stalled_after_its_interval_its_timeout_and_the_slack() -> None:
    assert stall_after(CHECK) == pytest.approx(1.0 + 0.5 + STALL_SLACK)


def test_a_health_has_flap_damping_unless_it_is_turned_off() -> None:
    assert new_health("dns", [CHECK], None).damping is None
    damped = new_health("dns", [CHECK, CHECK], DampingSettings())
    assert damped.damping is not None and len(damped.checks) == 2


def test_a_decision_is_logged_a_line_a_transition_worse_as_a_warning_and_each_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Transition("dns", State.UP, State.FALLING, "checks[0]: timeout", 1.0)
    rising = Transition("dns", State.DOWN, State.RISING, "checks[0]: NOERROR", 2.0)
    with caplog.at_level(logging.INFO, logger="anycastd.daemons.sidecar"):
        log_decision(Decision(transitions=(down, rising), notes=("dns: flap penalty 1000",)), sidecar_log)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("anycastd.daemons.sidecar", logging.WARNING, str(down)),
        ("anycastd.daemons.sidecar", logging.INFO, str(rising)),
        ("anycastd.daemons.sidecar", logging.WARNING, "dns: flap penalty 1000"),
    ]


def _loops_run(body: Any) -> Any:
    return asyncio.run(body())


def test_the_first_loop_to_end_ends_the_daemon_with_its_own_error() -> None:
    async def go() -> None:
        loops = Loops()
        assert not loops.running
        stop = asyncio.Event()

        async def fails() -> None:
            await asyncio.sleep(0)
            raise ValueError("probe loop broke")

        async def fails_later() -> None:
            await asyncio.sleep(0.01)
            raise KeyError("second")

        loops.start(fails(), "dns/checks[0]")
        loops.start(fails_later(), "dns/checks[1]")
        with pytest.raises(ValueError, match="probe loop broke"):
            await loops.until(stop)  # arms by itself
        assert loops.running
        await asyncio.sleep(0.02)  # the second one ends too: the first error stands, nothing else is raised

    _loops_run(go)


def test_a_loop_that_returns_is_an_error_named_after_it_and_a_watched_future_too() -> None:
    async def go() -> None:
        loops = Loops()

        async def returns() -> None:
            return None

        loops.arm()
        loops.start(returns(), "syncer")
        with pytest.raises(RuntimeError, match=r"^syncer ended$"):
            await loops.until(asyncio.Event())
        other = Loops()
        other.arm()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        other.watch(done)
        done.set_result(None)
        with pytest.raises(RuntimeError, match=r"^<Future .*> ended$"):
            await other.until(asyncio.Event())

    _loops_run(go)


def test_loops_stopped_on_purpose_end_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        loops = Loops()
        stop = asyncio.Event()
        finished: list[str] = []

        async def returns_early() -> None:
            return None

        async def forever(name: str) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)
                finished.append(name)

        early = loops.start(returns_early(), "before arming")  # ends before until(): not an error
        await asyncio.sleep(0)
        assert early.done()
        cancelled = loops.start(forever("cancelled"), "cancelled")
        await asyncio.sleep(0)
        await Loops.stop([cancelled])  # a reload stops a service's loops: waits for them, ends nothing
        assert finished == ["cancelled"]
        stop.set()
        await loops.until(stop)
        late = loops.start(returns_early(), "after stopping")  # e.g. the syncer, told to end
        await late
        await loops.until(stop)  # still nothing to raise

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        _loops_run(go)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR] == []


def test_announce_lifts_the_drains_then_forgives_and_says_each_once(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        book = MaintenanceBook(InMemoryStore(), lambda: 1_800_000_000.0)
        book.restore(["ns1"], "x")
        book.drain(["ns1", "gone"], "disk swap", "root")
        book.problem = "the file was unreadable"
        flapping = ServiceHealth.create(
            "dns/ns2", [Thresholds(1, 1, 1)], new_health("x", [CHECK], DampingSettings()).damping
        )
        drained = ServiceHealth.create("dns/ns1", [Thresholds(1, 1, 1)])
        drained.drain("disk swap", 5.0)
        assert flapping.damping is not None
        for at in range(6):  # fails and passes until flap damping holds it back
            flapping.feed(0, Result(Outcome.HARD_FAIL, "refused"), 10.0 + at)
            flapping.feed(0, Result(Outcome.OK, "NOERROR"), 10.5 + at)
        assert flapping.suppressed
        applied: list[tuple[str, Decision]] = []

        async def apply(name: str, decision: Decision) -> None:
            applied.append((name, decision))

        done = await lift_and_forgive(
            book,
            ["ns1", "gone", "ns3"],
            {"ns1": [drained], "ns2": [flapping]},
            apply,
            everything=True,
            again="routed again",
            kept="they stay drained",
            now=20.0,
        )
        assert (done.lifted, done.not_drained, done.cleared) == (("ns1", "gone"), ("ns3",), ("ns2",))
        assert book.problem is None and "ns1" not in book
        assert drained.state is not State.MAINTENANCE and drained.transitions[-1].at == 20.0
        assert not flapping.suppressed
        assert [name for name, _ in applied] == ["ns1", "ns1", "ns2"]  # the undrain, then each forgiven

    with caplog.at_level(logging.WARNING, logger="anycastd.daemons.skeleton"):
        asyncio.run(go())
    assert [r.getMessage() for r in caplog.records] == [
        "ns1: maintenance ended; routed again once its probes pass",
        "gone: maintenance ended; routed again once its probes pass",
        "ns2: flap penalty cleared by an operator; routed again once its probes pass",
    ]


def test_a_confirming_probe_cannot_be_hurried_it_is_already_short() -> None:
    async def go() -> list[bool]:
        fake = FakeTime()
        probe = Probe(
            "dns/checks[0]",
            0,
            CHECK,
            (),
            ServiceHealth.create("dns", [Thresholds(1, 3, 1)]),
            CheckStatus(),
            asyncio.Event(),
        )
        hurriable: list[bool] = []
        done = asyncio.Event()
        script = [Outcome.OK, Outcome.FAIL, Outcome.FAIL]

        class Prober:
            async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
                hurriable.append(probe.inflight is not None)
                if not script:
                    done.set()
                    await asyncio.Event().wait()
                outcome = script.pop(0)
                return ProbeResult(outcome, outcome.value, None, "192.0.2.10")

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            pass

        task = asyncio.ensure_future(
            probe_forever(probe, Prober(), on_result, clock=fake.clock, sleep=fake.sleep, jitter=lambda _: 0.0)
        )
        await alongside(task, done.wait())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return hurriable

    # the full timeout: it may be hurried; a check in doubt is confirmed with the short one: it may not
    assert asyncio.run(go()) == [True, True, False, False]


@pytest.mark.parametrize(
    ("check", "shortened"),
    [
        (Check(A), True),  # UDP: the query is sent three times within even the short wait
        (Check(A, kind="zone", zones=("example.com.",), interval=1.0, timeout=0.5), True),
        (Check(A, transport="tcp"), False),  # a lost segment waits TCP's own 200 ms minimum
        (Check(A, transport="dot", interval=0.5, timeout=0.4), False),
        (Check(A, transport="doh", interval=0.5, timeout=0.4), False),
        (Check(A, kind="command", command=("true",), interval=1.0, timeout=0.5), False),
    ],
)
def test_only_a_query_sent_again_within_its_timeout_is_confirmed_with_a_shorter_wait(
    check: Check, shortened: bool
) -> None:
    assert confirming(check).timeout == (check.timeout * CONFIRM_TIMEOUT if shortened else check.timeout)


# A queue that stuck and is empty again (the resolver thawed): ``resume``.

BAD = ProbeResult(Outcome.FAIL, "192.0.2.10: timeout after 0.5 s", 0.5, "192.0.2.10")


def test_resume_wakes_only_a_probe_whose_last_failed_while_no_round_runs() -> None:
    async def go() -> list[bool]:
        seen = []
        assert _probe().running is False and _shared().running is False  # no round before the first
        for last, running in ((BAD, False), (None, False), (OK, False), (BAD, True)):
            probe = _probe(asyncio.Event())
            probe.status.last = last
            if running:
                probe.running = True
            probe.resume()
            assert probe.wake is not None
            seen.append(probe.wake.is_set())
        unwatched = _probe()
        unwatched.status.last = BAD
        unwatched.resume()  # nothing to wake: polling alone
        shared = _shared()
        shared.wake = asyncio.Event()
        shared.members[0].status.last, shared.members[1].status.last = OK, OK
        shared.resume()
        seen.append(shared.wake.is_set())
        shared.members[1].status.last = BAD
        shared.resume()
        seen.append(shared.wake.is_set())
        return seen

    assert asyncio.run(go()) == [True, False, False, False, False, True]


def test_a_round_runs_until_its_results_are_recorded_and_a_resume_then_probes_at_once() -> None:
    async def go() -> tuple[list[bool], int, bool]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        probe = _probe(wake)
        probed = asyncio.Queue[float]()
        running: list[bool] = []

        class Prober:
            async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
                running.append(probe.running)
                await probed.put(loop.time())
                return BAD

        async def forever(seconds: float) -> None:
            await asyncio.Event().wait()  # the schedule's sleeps never end by themselves here

        async def on_result(p: Probe, result: ProbeResult, decision: Decision) -> None:
            running.append(p.running)
            p.resume()  # the resolver reads again while this round's result is being recorded: no second probe

        task = asyncio.ensure_future(
            probe_forever(probe, Prober(), on_result, clock=loop.time, sleep=forever, jitter=lambda _: 60.0)
        )
        wake.set()  # the first probe at once (a socket event), then only the schedule's sleep: none ends
        await alongside(task, probed.get())
        await alongside(task, until(lambda: probe.status.probes == 1, "the first result"))
        await asyncio.sleep(0.01)
        assert not wake.is_set() and probed.empty()  # the resume during the round did nothing
        running.append(probe.running)
        probe.resume()  # the last probe failed and none runs: probe now, not in 60 s
        await alongside(task, probed.get())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return running, probe.status.woken, probe.running

    running, woken, still = asyncio.run(go())
    assert running[:3] == [True, True, False] and running[3] is True
    assert woken == 2 and not still  # the first wake, and the resume
