"""Soft degradation, pure: the latency window's hysteresis, the level table, and flap damping of the weight."""

from __future__ import annotations

import itertools

import pytest

from anycastd.core.damping import DEFAULT_DAMPING, Damping
from anycastd.core.degradation import (
    TABLE,
    Degradation,
    ExitRule,
    ExitWindow,
    LatencyRule,
    LatencyWindow,
    Level,
    Move,
    Sample,
    Signal,
)

RULE = LatencyRule(latency_ms=50, recover_ms=40, window=3)
FAST, SLOW, EDGE = 0.001, 0.080, 0.045  # seconds


def test_the_table_lists_every_pair_and_only_a_slow_signal_enters_degraded() -> None:
    assert set(TABLE) == set(itertools.product(Level, Signal))
    assert {new for (old, signal), new in TABLE.items() if new is Level.DEGRADED} == {Level.DEGRADED}
    assert all(TABLE[(level, Signal.SLOW)] is Level.DEGRADED for level in Level)
    assert all(TABLE[(level, Signal.FAST)] is Level.NORMAL for level in Level)
    assert all(TABLE[(level, Signal.FAST_HELD)] is Level.HELD for level in Level)


def test_nothing_is_decided_until_the_window_is_full() -> None:
    w = LatencyWindow(RULE)
    assert not w.observe(Sample(True, SLOW)) and not w.observe(Sample(True, SLOW)) and w.median_ms is None
    assert w.observe(Sample(True, SLOW)) and w.median_ms == pytest.approx(80.0)


def test_hysteresis_between_latency_and_recover() -> None:
    w = LatencyWindow(RULE)
    for _ in range(3):
        w.observe(Sample(True, SLOW))
    for _ in range(3):
        assert w.observe(Sample(True, EDGE))  # 45 ms: below 50, not below 40: still slow
    for _ in range(2):
        w.observe(Sample(True, FAST))
    assert not w.slow  # the median of (45, 1, 1) is 1 ms
    for _ in range(3):
        assert not w.observe(Sample(True, EDGE))  # and 45 ms does not make it slow again
    assert "median latency 45.0 ms over 3 probes (slow above 50 ms, fast below 40)" in w.why()


def test_a_failed_probe_is_no_latency() -> None:
    w = LatencyWindow(RULE)
    for _ in range(3):
        w.observe(Sample(True, SLOW))
    for _ in range(10):
        assert w.observe(Sample(False, None))  # failures are the health machine's; the window keeps its verdict
    assert list(w.latencies) == [SLOW] * 3


def test_the_rule_refuses_a_recover_at_or_above_latency_and_an_empty_window() -> None:
    with pytest.raises(ValueError, match="recover_ms must be above 0 and below latency_ms"):
        LatencyRule(50, 50)
    with pytest.raises(ValueError, match="window must be at least 1"):
        LatencyRule(50, 40, 0)


def run(d: Degradation, check: int, latency: float, start: float, seconds: float, *, every: float = 0.2) -> list[Move]:
    moves = []
    t = start
    while t < start + seconds:
        move = d.observe(check, Sample(True, latency), t)
        if move is not None:
            moves.append(move)
        t += every
    return moves


def test_a_slow_check_degrades_the_service_and_a_check_without_a_rule_never_does() -> None:
    d = Degradation([None, RULE], Damping(DEFAULT_DAMPING))
    assert run(d, 0, SLOW, 0.0, 2.0) == []  # check 0 has no degraded_when
    moves = run(d, 1, SLOW, 2.0, 1.0)
    assert [(m.old, m.new) for m in moves] == [(Level.NORMAL, Level.DEGRADED)] and moves[0].reweighs
    assert "checks[1]: median latency 80.0 ms" in d.why()
    moves = run(d, 1, FAST, 3.0, 1.0)
    assert [(m.old, m.new) for m in moves] == [(Level.DEGRADED, Level.NORMAL)]
    assert d.why() == "every check is fast" and d.changes == 2


def test_a_resolver_oscillating_every_two_seconds_is_held_degraded_after_a_few_changes() -> None:
    """The issue's bound: at most 8 weight changes a minute while the latency crosses the threshold every 2 s."""
    d = Degradation([RULE], Damping(DEFAULT_DAMPING))
    moves: list[Move] = []
    for i in range(30):  # 60 s: 2 s slow, 2 s fast, ...
        moves += run(d, 0, SLOW if i % 2 == 0 else FAST, 2.0 * i, 2.0)
    assert d.changes <= 8, [(m.old, m.new) for m in moves]
    assert Level.HELD in {m.new for m in moves}
    assert sum(m.reweighs for m in moves) == d.changes
    # once it settles, the hold ends when the penalty has decayed below reuse, and the weight comes back
    settled = run(d, 0, FAST, 60.0, 120.0, every=1.0)
    assert [(m.old, m.new) for m in settled][-1] == (Level.HELD, Level.NORMAL)
    assert d.level is Level.NORMAL


def test_without_damping_every_crossing_changes_the_weight() -> None:
    d = Degradation([RULE], None)
    for i in range(10):
        run(d, 0, SLOW if i % 2 == 0 else FAST, 2.0 * i, 2.0)
    assert d.changes == 10 and d.level is Level.NORMAL


def test_held_says_why_and_weighs_as_degraded() -> None:
    d = Degradation([RULE], Damping(DEFAULT_DAMPING))
    for i in range(6):
        run(d, 0, SLOW if i % 2 == 0 else FAST, 2.0 * i, 2.0)
    assert d.level is Level.HELD and d.level.degraded
    assert d.why() == "held degraded by flap damping until its penalty decays below 750"
    assert str(Level.HELD) == "held" and not Level.NORMAL.degraded


def test_a_command_is_slow_after_window_degraded_exits_in_a_row_and_fast_after_window_others() -> None:
    w = ExitWindow(ExitRule((2,), window=3))
    assert not w.observe(Sample(True, 0.01, True)) and not w.observe(Sample(True, 0.01, True))
    assert not w.observe(Sample(True, 0.01, False))  # not three in a row
    for _ in range(3):
        w.observe(Sample(True, 0.01, True))
    assert w.slow
    assert w.observe(Sample(False, None)) and w.observe(
        Sample(True, 0.01, False)
    )  # a failure counts for nothing; one pass neither
    w.observe(Sample(True, 0.01, False))
    assert not w.observe(Sample(True, 0.01, False))
    assert w.why() == "exited 2 in its last 3 passing probes"


def test_a_degradation_of_a_command_check() -> None:
    d = Degradation([ExitRule((2, 3), window=2)], None)
    assert d.observe(0, Sample(True, 0.01, True), 0.0) is None
    move = d.observe(0, Sample(True, 0.01, True), 1.0)
    assert move is not None and move.new is Level.DEGRADED
    assert d.why() == "checks[0]: exited 2, 3 in its last 2 passing probes"


@pytest.mark.parametrize(("codes", "window"), [((), 3), ((0,), 3), ((256,), 3), ((2,), 0)])
def test_an_exit_rule_needs_codes_from_1_to_255_and_a_window(codes: tuple[int, ...], window: int) -> None:
    with pytest.raises(ValueError):
        ExitRule(codes, window)


# Named by the mutants of `make mutation` they kill.


def test_the_rules_bounds_and_messages_exactly() -> None:
    assert LatencyRule(50, 0.5, 1).window == 1  # recover above 0, however small; a window of one probe
    with pytest.raises(ValueError) as info:
        LatencyRule(50, 0)
    assert str(info.value) == "recover_ms must be above 0 and below latency_ms"
    with pytest.raises(ValueError) as info:
        LatencyRule(50, 40, 0)
    assert str(info.value) == "window must be at least 1"
    assert ExitRule((1, 255), 1).codes == (1, 255)
    for codes in ((0,), (256,)):
        with pytest.raises(ValueError) as info:
            ExitRule(codes)
        assert str(info.value) == "codes must be exit codes from 1 to 255"
    with pytest.raises(ValueError) as info:
        ExitRule((2,), 0)
    assert str(info.value) == "window must be at least 1"


def test_the_windows_start_fast_and_their_edges() -> None:
    w = LatencyWindow(LatencyRule(50, 40, 1))
    assert w.slow is False and w.why().startswith("median latency not yet known over 1 probes")
    assert w.observe(Sample(False, 0.080)) is False and len(w.latencies) == 0  # a failed probe's latency is not kept
    assert w.observe(Sample(True, 0.050)) is False  # exactly latency_ms: not above it
    assert w.observe(Sample(True, 0.051)) is True
    assert w.observe(Sample(True, 0.040)) is True  # exactly recover_ms: not below it
    assert w.observe(Sample(True, 0.039)) is False and w.slow is False
    e = ExitWindow(ExitRule((2,), 1))
    assert e.slow is False
    assert e.observe(Sample(True, 0.01)) is False  # a pass says nothing degraded unless told
    assert e.observe(Sample(True, 0.01, True)) is True and e.observe(Sample(True, 0.01, False)) is False


def test_a_move_says_why_and_only_an_entry_adds_to_the_penalty() -> None:
    damping = Damping(DEFAULT_DAMPING)
    d = Degradation([RULE, RULE], damping)
    for t in range(3):
        d.observe(0, Sample(True, SLOW), float(t))
    move = None
    for t in range(3):
        move = d.observe(1, Sample(True, SLOW), 3.0 + t) or move
    assert d.why().count("; ") == 1 and "(slow above 50 ms, fast below 40); checks[1]: median" in d.why()
    assert damping.penalty(2.0) == pytest.approx(1000.0)  # one entry: the service was already degraded
    for t in range(3):
        d.observe(0, Sample(True, FAST), 10.0 + t)
        move = d.observe(1, Sample(True, FAST), 10.0 + t) or move
    assert move is not None and move.new is Level.NORMAL and move.reason == "every check is fast"
    assert damping.penalty(12.0) == pytest.approx(1000.0 * 2 ** (-10.0 / 15.0))  # leaving added nothing
    exit_rule = Degradation([ExitRule((2,), 1)], None)
    assert exit_rule.observe(0, Sample(True, 0.01), 0.0) is None  # a pass is not degraded unless told
