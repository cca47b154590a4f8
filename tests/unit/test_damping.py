"""Flap damping (anycastd.core.damping) and how the health core and the sidecar's path use it."""

from __future__ import annotations

import pytest

from anycastd.core.damping import DEFAULT_DAMPING, Damping, DampingSettings
from anycastd.core.health import (
    Announce,
    Outcome,
    Path,
    Result,
    ServiceHealth,
    State,
    Thresholds,
    Withdraw,
    path_of,
)

OK = Result(Outcome.OK, "NOERROR")
HARD = Result(Outcome.HARD_FAIL, "connection refused")


def test_the_penalty_halves_every_half_life_and_adds_per_failure() -> None:
    d = Damping(DampingSettings(penalty=1000, half_life=10, suppress=5000, reuse=100))
    d.fail(0.0)
    assert d.penalty(0.0) == 1000
    assert d.penalty(10.0) == pytest.approx(500)
    assert d.penalty(-5.0) == 1000  # a clock that went back decays nothing
    d.fail(10.0)
    assert d.penalty(10.0) == pytest.approx(1500) and not d.suppressed


def test_suppression_starts_at_suppress_and_ends_below_reuse() -> None:
    d = Damping(DampingSettings(penalty=1000, half_life=10, suppress=2000, reuse=750))
    d.fail(0.0)
    d.fail(0.0)
    assert d.suppressed and d.penalty(0.0) == 2000  # reaching suppress is enough
    until = d.reuse_at()
    assert until == pytest.approx(10 * 1.415, abs=0.01)  # 2000 -> 750: log2(2.667) half-lives
    assert until is not None
    assert not d.update(until - 0.01) and d.suppressed
    assert d.update(until + 0.01) and not d.suppressed
    assert not d.update(until + 1) and d.reuse_at() is None  # ended once, said once


def test_the_penalty_is_capped_so_a_suppression_ends_within_max_suppress() -> None:
    s = DampingSettings(penalty=1000, half_life=15, suppress=2000, reuse=750, max_suppress=60)
    assert s.ceiling == 750 * 16
    d = Damping(s)
    for t in range(100):
        d.fail(float(t))
    assert d.penalty(99.0) == s.ceiling
    assert d.reuse_at() == pytest.approx(99 + 60)


def test_clear_forgets_every_failure() -> None:
    d = Damping(DEFAULT_DAMPING)
    for _ in range(3):
        d.fail(0.0)
    d.clear()
    assert not d.suppressed and d.penalty(0.0) == 0 and d.reuse_at() is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reuse": 2000}, "reuse must be above 0 and below suppress"),
        ({"reuse": 0}, "reuse must be above 0 and below suppress"),
        ({"penalty": 0}, "must be above 0"),
        ({"half_life": 0}, "must be above 0"),
        ({"max_suppress": 0}, "must be above 0"),
    ],
)
def test_settings_that_cannot_work_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DampingSettings(**changes)


def damped(settings: DampingSettings = DEFAULT_DAMPING) -> ServiceHealth:
    return ServiceHealth.create("dns", [Thresholds(rise=1, fall=1, fall_hard=1)], Damping(settings))


def flap(health: ServiceHealth, start: float, cycles: int, period: float = 2.0) -> list[str]:
    """Fail and recover every ``period`` seconds; the actions taken, in order."""
    actions = []
    for i in range(cycles):
        for result, at in ((HARD, start + i * period), (OK, start + i * period + period / 2)):
            for action in health.feed(0, result, at).actions:
                actions.append(type(action).__name__)
    return actions


def test_a_resolver_failing_every_2_s_makes_five_route_changes_then_none() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    assert flap(health, 1.0, 30) == ["Withdraw", "Announce", "Withdraw", "Announce", "Withdraw"]
    assert health.suppressed and health.healthy and not health.announced
    assert health.damping is not None
    until = health.damping.reuse_at()
    assert until is not None and 59 + 30 < until <= 59 + DEFAULT_DAMPING.max_suppress  # near the cap


def test_a_suppressed_service_is_announced_by_its_next_probe_after_the_penalty_decays() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    flap(health, 1.0, 3)
    assert health.damping is not None
    until = health.damping.reuse_at()
    assert until is not None
    assert health.feed(0, OK, until - 0.1).actions == ()  # still suppressed
    decision = health.feed(0, OK, until + 0.1)
    assert decision.actions == (Announce("dns", "checks[0]: NOERROR"),)
    assert decision.notes[0].startswith("dns: flap damping: no longer suppressed (penalty 7")


def test_the_first_withdrawal_is_never_delayed_and_one_failure_adds_no_delay() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    assert health.feed(0, HARD, 1.0).actions == (Withdraw("dns", "checks[0]: connection refused"),)
    assert health.feed(0, OK, 1.1).actions == (Announce("dns", "checks[0]: NOERROR"),)
    assert not health.suppressed


def test_suppression_is_said_once_with_the_penalty_and_when_it_ends() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    notes = [n for i in range(3) for n in health.feed(0, HARD, 1.0 + i).notes + health.feed(0, OK, 1.5 + i).notes]
    assert len(notes) == 1
    assert notes[0].startswith("dns: flap damping: suppressed, penalty 2") and ">= 2000" in notes[0]
    assert "announced again once it decays below 750 (in " in notes[0]


def test_a_drain_is_not_a_failure() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    for i in range(5):
        health.drain("maintenance", float(i))
        health.undrain(float(i) + 0.5)
    assert health.damping is not None and health.damping.penalty(5.0) == 0 and health.announced


def test_forgive_clears_the_penalty_and_announces_a_healthy_service_now() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    flap(health, 1.0, 3)
    assert health.suppressed
    assert health.forgive(8.0).actions == (Announce("dns", "flap penalty cleared by an operator"),)
    assert not health.suppressed and health.announced


def test_without_damping_nothing_is_suppressed_and_forgive_changes_nothing() -> None:
    health = ServiceHealth.create("dns", [Thresholds(1, 1, 1)])
    health.feed(0, OK, 0.0)
    assert flap(health, 1.0, 5) == ["Withdraw", "Announce"] * 5
    assert not health.suppressed and health.forgive(20.0).actions == ()


# the sidecar's path -------------------------------------------------------------------------------------


def test_path_of_graceful_shutdown_keeps_a_failing_proven_service_tagged() -> None:
    health = damped()
    assert path_of(health, graceful_shutdown=True) is Path.WITHDRAWN  # never announced: not kept
    health.feed(0, HARD, 0.0)
    assert path_of(health, graceful_shutdown=True) is Path.WITHDRAWN
    health.feed(0, OK, 1.0)
    assert path_of(health, graceful_shutdown=True) is Path.ANNOUNCED
    health.feed(0, HARD, 2.0)
    assert path_of(health, graceful_shutdown=True) is Path.GRACEFUL_SHUTDOWN
    assert path_of(health, graceful_shutdown=False) is Path.WITHDRAWN


def test_a_drain_withdraws_even_with_graceful_shutdown_and_the_service_must_prove_itself_again() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    health.drain("kernel upgrade", 1.0)
    assert path_of(health, graceful_shutdown=True) is Path.WITHDRAWN
    health.feed(0, HARD, 2.0)
    health.undrain(3.0)
    assert health.state is State.DOWN and path_of(health, graceful_shutdown=True) is Path.WITHDRAWN


@pytest.mark.parametrize("failure_action_gshut", [False, True])
def test_a_soft_drain_keeps_the_path_tagged_while_the_probes_pass(failure_action_gshut: bool) -> None:
    health = damped()
    health.drain("rollout", 0.0, soft=True)  # before any probe: nothing proven, nothing kept
    assert health.state is State.MAINTENANCE and path_of(health, failure_action_gshut) is Path.WITHDRAWN
    health.feed(0, OK, 1.0)
    assert not health.announced and health.probes_pass
    assert path_of(health, failure_action_gshut) is Path.GRACEFUL_SHUTDOWN
    health.feed(0, HARD, 2.0)  # a real failure during the soft drain withdraws
    assert not health.probes_pass and path_of(health, failure_action_gshut) is Path.WITHDRAWN
    health.feed(0, OK, 3.0)
    assert path_of(health, failure_action_gshut) is Path.GRACEFUL_SHUTDOWN
    health.drain("power work", 4.0)  # a plain drain on top of it: withdrawn
    assert not health.soft and path_of(health, failure_action_gshut) is Path.WITHDRAWN
    health.drain("rollout", 5.0, soft=True)
    health.undrain(6.0)
    assert health.soft is False and path_of(health, failure_action_gshut) is Path.ANNOUNCED


def test_a_soft_drain_of_a_suppressed_service_withdraws_it() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    flap(health, 1.0, 3)
    assert health.probes_pass and health.suppressed
    health.drain("rollout", 10.0, soft=True)
    assert path_of(health, graceful_shutdown=False) is Path.WITHDRAWN


def test_probes_pass_counts_require_checks_whatever_the_drain() -> None:
    health = ServiceHealth.create("dns", [Thresholds(1, 1, 1), Thresholds(1, 1, 1)], require=1)
    health.feed(0, OK, 0.0)
    health.drain("x", 1.0)
    assert health.probes_pass and not health.healthy  # one of two passes; require 1
    health.feed(0, HARD, 2.0)
    assert not health.probes_pass


def test_a_suppressed_service_stays_tagged_until_it_is_announced_again() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    flap(health, 1.0, 3)
    assert health.healthy and health.suppressed
    assert path_of(health, graceful_shutdown=True) is Path.GRACEFUL_SHUTDOWN
    assert str(Path.GRACEFUL_SHUTDOWN) == "graceful-shutdown"


# Named by the mutants of `make mutation` they kill.


def test_settings_messages_and_the_smallest_settings_allowed() -> None:
    with pytest.raises(ValueError) as info:
        DampingSettings(reuse=3000)
    assert str(info.value) == "reuse must be above 0 and below suppress"
    with pytest.raises(ValueError) as info:
        DampingSettings(penalty=-1)
    assert str(info.value) == "penalty, half_life and max_suppress must be above 0"
    small = DampingSettings(penalty=0.5, half_life=0.5, max_suppress=0.5)  # above 0 is enough
    assert small.penalty == small.half_life == small.max_suppress == 0.5


def test_a_penalty_exactly_at_reuse_still_suppresses() -> None:
    d = Damping(DampingSettings(penalty=1000, half_life=10, suppress=1000, reuse=500))
    d.fail(0.0)
    assert d.suppressed is True
    assert not d.update(10.0) and d.penalty(10.0) == 500  # decayed to reuse, not below it
    assert d.update(10.001) and d.suppressed is False
    d.fail(20.0)
    d.clear()
    assert d.suppressed is False


def test_the_suppression_note_gives_the_wait_and_is_said_once_per_suppression() -> None:
    settings = DampingSettings(penalty=1000, half_life=10, suppress=2000, reuse=500)
    health = damped(settings)
    health.feed(0, OK, 100.0)
    health.feed(0, HARD, 100.0)
    health.feed(0, OK, 100.0)
    decision = health.feed(0, HARD, 100.0)  # 2000: suppressed, 20 s to decay to 500
    assert decision.notes == (
        "dns: flap damping: suppressed, penalty 2000 >= 2000; announced again once it decays below 500 "
        "(in 20.0 s if it fails no more)",
    )
    health.feed(0, OK, 101.0)
    assert health.feed(0, HARD, 102.0).notes == ()  # already suppressed: said once


def test_forgive_changes_no_state_and_a_drain_unproves() -> None:
    health = damped()
    health.feed(0, OK, 0.0)
    assert health.forgive(1.0).transitions == ()
    health.drain("x", 2.0)
    assert health.proven is False
