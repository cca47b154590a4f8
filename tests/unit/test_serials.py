"""Zone freshness (anycastd.core.serials): RFC 1982 serial arithmetic, and how long a zone may lag its primary."""

from __future__ import annotations

import pytest

from anycastd.core.serials import HALF, SPACE, Freshness, Verdict, behind


@pytest.mark.parametrize(
    ("a", "b", "a_behind_b"),
    [
        (1, 2, True),
        (2, 1, False),
        (5, 5, False),
        (SPACE - 1, 0, True),  # wrapped: 0 follows 4294967295
        (0, SPACE - 1, False),
        (SPACE - 10, 5, True),
        (1, 1 + HALF - 1, True),  # the farthest "ahead" that is defined
        (1, 1 + HALF, False),  # exactly half the space: undefined, never "behind"
        (1 + HALF, 1, False),
        (2024120601, 2024120602, True),  # a date-style serial, bumped
    ],
)
def test_rfc_1982_serial_arithmetic(a: int, b: int, a_behind_b: bool) -> None:
    assert behind(a, b) is a_behind_b


def test_a_zone_may_lag_for_max_lag_and_no_longer() -> None:
    f = Freshness()
    assert f.observe("z.", 5, 5, 0.0, 10).fresh
    v = f.observe("z.", 5, 6, 1.0, 10)  # the primary changed: a NOTIFY and an IXFR are on their way
    assert v.fresh and v.reason == "z. serial 5, behind the primary's 6 for 0.0 s (max_lag 10 s)"
    assert f.observe("z.", 5, 7, 11.0, 10).fresh  # 10 s behind: not yet more than max_lag
    v = f.observe("z.", 5, 7, 11.5, 10)
    assert v == Verdict(False, "z. serial 5, behind the primary's 7 for 10.5 s, more than max_lag (10 s)")
    v = f.observe("z.", 7, 7, 12.0, 10)  # caught up: fresh at once
    assert v.fresh and v.reason == "z. serial 7, the primary's 7"
    assert f.observe("z.", 7, 8, 13.0, 10).fresh  # behind again: the clock starts again
    assert f.observe("z.", 7, 8, 23.0, 10).fresh


def test_a_secondary_ahead_of_its_primary_is_not_stale() -> None:
    assert Freshness().observe("z.", 9, 8, 0.0, 1).fresh  # the primary was restored from a backup, say


def test_a_silent_primary_is_compared_by_its_last_serial() -> None:
    f = Freshness()
    v = f.observe("z.", 5, None, 0.0, 10)
    assert v.fresh and v.reason == "z. serial 5; the primary did not answer (nothing to compare)"
    f.observe("z.", 5, 6, 1.0, 10)
    v = f.observe("z.", 5, None, 12.0, 10)  # still behind the last serial it gave, for longer than max_lag
    assert v == Verdict(
        False,
        "z. serial 5, behind the primary's 6 (the primary did not answer: its last serial) for 11.0 s, "
        "more than max_lag (10 s)",
    )
    assert f.observe("z.", 6, None, 13.0, 10).fresh  # caught up with it


def test_zones_are_judged_apart() -> None:
    f = Freshness()
    f.observe("a.", 1, 2, 0.0, 5)
    assert f.observe("b.", 1, 1, 10.0, 5).fresh
    assert not f.observe("a.", 1, 2, 10.0, 5).fresh
