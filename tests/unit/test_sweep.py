"""Which service addresses a steady round asks: a slice in turn, each at least once every SWEEP seconds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastd.core.sweep import SWEEP, SWEEP_MIN, Sweep, slice_size


@pytest.mark.parametrize(
    ("count", "interval", "size"),
    [
        (0, 0.2, 0),  # nothing to ask
        (2, 0.2, 2),  # one dual-stack service: all, every round, as before
        (SWEEP_MIN, 0.2, SWEEP_MIN),
        (SWEEP_MIN + 1, 0.2, SWEEP_MIN),  # one more: a slice of SWEEP_MIN
        (40, 0.2, 8),  # 40 in 5 rounds of 0.2 s: 1 s
        (41, 0.2, 9),  # 8.2 a round, rounded up
        (200, 0.2, 40),  # 100 dual-stack services
        (200, 0.5, 100),
        (200, 1.0, 200),  # an interval of SWEEP: every round asks all
        (10, 2.0, 10),  # longer still: all, never more than there are
    ],
)
def test_a_slice_asks_each_address_once_a_sweep_and_never_fewer_than_the_minimum(
    count: int, interval: float, size: int
) -> None:
    assert slice_size(count, interval) == size


def test_a_longer_sweep_asks_fewer_a_round() -> None:
    assert SWEEP == 1.0 and slice_size(200, 0.2, sweep=2.0) == 20 and slice_size(200, 0.2, sweep=0.5) == 80


def test_slices_go_round_the_addresses_in_turn() -> None:
    sweep = Sweep()
    addresses = list(range(20))
    got = [sweep.next(addresses, 0.2) for _ in range(4)]
    assert got == [list(range(8)), list(range(8, 16)), [16, 17, 18, 19, 0, 1, 2, 3], list(range(4, 12))]
    assert sweep.at == 12


def test_a_few_addresses_are_all_asked_and_the_turn_stays_where_it_was() -> None:
    sweep = Sweep(at=5)
    assert sweep.next(["a", "b"], 0.2) == ["a", "b"] and sweep.at == 5
    assert sweep.next(list(range(9)), 0.2) == [5, 6, 7, 8, 0, 1, 2, 3] and sweep.at == 4  # the turn survives


def test_a_turn_past_the_end_after_the_addresses_shrank_starts_within_them() -> None:
    sweep = Sweep(at=30)  # a reload took services away
    assert sweep.next(list(range(20)), 0.2) == list(range(10, 18)) and sweep.at == 18


@given(
    count=st.integers(1, 600),
    interval=st.floats(0.01, 5.0),
    start=st.integers(0, 1000),
)
def test_every_address_is_asked_within_a_sweep_rounded_up_to_an_interval(
    count: int, interval: float, start: int
) -> None:
    sweep = Sweep(at=start)
    addresses = list(range(count))
    size = slice_size(count, interval)
    rounds = math.ceil(count / size)
    assert rounds * interval < SWEEP + interval or size == count  # the bound the docstring states
    last: dict[int, int] = {}
    for n in range(3 * rounds):
        picked = sweep.next(addresses, interval)
        assert len(picked) == size and len(set(picked)) == size
        last.update(dict.fromkeys(picked, n))
        if n >= rounds - 1:  # from then on, every address was asked within the last ``rounds`` rounds
            assert len(last) == count and min(last.values()) > n - rounds
