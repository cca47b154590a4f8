"""BFD's flaps through flap damping (anycastd.announce.flaps): a flapping session is held back, a settled one released."""

from __future__ import annotations

import asyncio

from anycastd.announce.flaps import SessionDamping, SessionFlaps
from anycastd.core.damping import DampingSettings

R1, R2 = "192.0.2.9", "192.0.2.73"


def test_only_a_failure_from_up_counts() -> None:
    d = SessionDamping([R1, R2])
    assert not d.observe(R1, "init", 0.0)  # coming up: no failure
    assert not d.observe(R1, "up", 0.1)
    assert not d.observe(R1, "down", 1.0)  # the first failure: penalty 1000, below suppress (2000)
    assert not d.observe(R1, "down", 1.1)  # down again without being up: not another failure
    assert d.held == set()
    assert not d.observe("198.51.100.9", "down", 1.2)  # not one of ours
    for at in range(10):  # bfdd restarted again and again: its sessions are unknown, the link did not fail
        d.observe(R2, "up", 10.0 + at)
        assert not d.observe(R2, "unknown", 10.5 + at)
    assert d.damping[R2].penalty(20.0) == 0


def test_the_third_flap_in_a_row_holds_and_the_penalty_decay_releases() -> None:
    d = SessionDamping([R1, R2])
    held = [d.observe(R1, state, at) for at, state in enumerate(["up", "down", "up", "down", "up", "down"])]
    assert held == [False, False, False, False, False, True]  # 1000, ~1912, ~2830 >= suppress (2000)
    assert d.held == {R1}
    assert not d.observe(R1, "up", 6.0) and d.held == {R1}  # up again is not enough
    assert d.settled(20.0) == []  # still above reuse (750)
    assert d.settled(60.0) == [R1] and d.held == set()
    assert d.damping[R2].penalty(60.0) == 0


def test_one_flap_now_and_then_is_forgotten() -> None:
    d = SessionDamping([R1], DampingSettings())
    for minute in range(5):  # one flap a minute: the penalty halves every 15 s
        d.observe(R1, "up", 60.0 * minute)
        assert not d.observe(R1, "down", 60.0 * minute + 1)
    assert d.held == set()


def test_holding_and_releasing_go_through_the_announcer() -> None:
    calls: list[tuple[str, bool]] = []
    now = [0.0]

    async def hold(neighbor: str, held: bool) -> None:
        calls.append((neighbor, held))

    flaps = SessionFlaps(SessionDamping([R1, R2]), hold, clock=lambda: now[0])

    async def body() -> None:
        for at, state in enumerate(["up", "down", "up", "down", "up", "down"]):
            now[0] = float(at)
            flaps.observe(R1, state)
        await asyncio.sleep(0)
        assert calls == [(R1, True)] and flaps.holds == 1
        assert flaps.describe()[R1]["held"] is True and flaps.describe()[R2]["held"] is False
        now[0] = 100.0
        task = asyncio.create_task(flaps.run())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert calls == [(R1, True), (R1, False)]

    asyncio.run(body())


def test_an_operator_clears_the_penalty_and_releases_what_was_held() -> None:
    calls: list[tuple[str, bool]] = []

    async def hold(neighbor: str, held: bool) -> None:
        calls.append((neighbor, held))

    flaps = SessionFlaps(SessionDamping([R1, R2]), hold, clock=lambda: 5.0)

    async def body() -> list[str]:
        for state in ["up", "down", "up", "down", "up", "down"]:
            flaps.observe(R1, state)
        await asyncio.sleep(0)
        return await flaps.forgive()

    assert asyncio.run(body()) == [R1]
    assert calls == [(R1, True), (R1, False)] and flaps.damping.held == set()
    assert flaps.damping.damping[R1].penalty(5.0) == 0
