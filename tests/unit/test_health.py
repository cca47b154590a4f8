"""The health core, table-driven: a sequence of results in, states and actions out."""

from __future__ import annotations

from pathlib import Path

import pytest

from anycastd.core.damping import DEFAULT_DAMPING, Damping
from anycastd.core.health import (
    ACTIONS,
    CHECK_TABLE,
    QUIET,
    TRANSITIONS,
    Announce,
    CheckHealth,
    Event,
    IllegalTransition,
    Outcome,
    Result,
    ServiceHealth,
    State,
    Thresholds,
    Withdraw,
)

OK = Result(Outcome.OK, "NOERROR in 1 ms")
FAIL = Result(Outcome.FAIL, "timeout after 150 ms")
HARD = Result(Outcome.HARD_FAIL, "connection refused")

D, R, U, F = State.DOWN, State.RISING, State.UP, State.FALLING

# (rise, fall, fall_hard, results, states after each result)
CASES = [
    ("starts down, rises after rise passes", 3, 3, 1, [OK, OK, OK], [R, R, U]),
    ("rise 1 goes straight up", 1, 3, 1, [OK], [U]),
    ("a failure while rising starts over", 3, 3, 1, [OK, OK, FAIL, OK, OK, OK], [R, R, D, R, R, U]),
    ("a failure while down stays down", 2, 3, 1, [FAIL, HARD, OK, OK], [D, D, R, U]),
    ("soft failures fall after fall", 1, 3, 1, [OK, FAIL, FAIL, FAIL], [U, F, F, D]),
    ("a pass while falling recovers", 1, 3, 1, [OK, FAIL, FAIL, OK, FAIL], [U, F, F, U, F]),
    ("fall 1 goes straight down", 1, 1, 1, [OK, FAIL], [U, D]),
    ("one hard failure is enough by default", 1, 3, 1, [OK, HARD], [U, D]),
    ("hard failures count towards fall too", 1, 3, 5, [OK, HARD, FAIL, HARD], [U, F, F, D]),
    ("fall_hard counts consecutive hard failures only", 1, 9, 2, [OK, HARD, FAIL, HARD, HARD], [U, F, F, F, D]),
    ("up stays up on passes", 2, 3, 1, [OK, OK, OK, OK], [R, U, U, U]),
]


@pytest.mark.parametrize(
    ("rise", "fall", "fall_hard", "results", "states"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_states(rise: int, fall: int, fall_hard: int, results: list[Result], states: list[State]) -> None:
    check = CheckHealth("dns/checks[0]", Thresholds(rise, fall, fall_hard))
    assert check.state is D
    seen = []
    for now, result in enumerate(results):
        check.feed(result, float(now))
        seen.append(check.state)
    assert seen == states


def test_transition_records_old_new_reason_and_time() -> None:
    check = CheckHealth("dns/checks[0]", Thresholds(1, 3, 1))
    t = check.feed(OK, 10.0)
    assert t is not None and (t.old, t.new, t.at) == (D, U, 10.0)
    assert str(t) == "dns/checks[0]: down -> up (NOERROR in 1 ms)"
    assert check.since == 10.0
    assert check.feed(OK, 11.0) is None  # no change, no transition
    assert check.since == 10.0


def test_a_move_missing_from_the_table_raises_and_leaves_state() -> None:
    check = CheckHealth("c", Thresholds(3, 3, 1))
    check._state = State.MAINTENANCE  # a bug: only a service is ever drained
    with pytest.raises(IllegalTransition, match="no move from maintenance on PASS"):
        check.feed(Result(Outcome.OK, "ok"), 0.0)
    assert check.state is State.MAINTENANCE


def test_the_check_table_is_whole_and_the_action_table_too() -> None:
    checkable = [s for s in State if s is not State.MAINTENANCE]
    assert set(CHECK_TABLE) == {(s, e) for s in checkable for e in Event}
    assert set(ACTIONS) == {(a, b) for a in (False, True) for b in (False, True)}


def _rows() -> list[str]:
    """docs/architecture.md's table, as CHECK_TABLE says it: every move, states that share it on one row."""
    grouped: dict[tuple[Event, State], list[State]] = {}
    for (old, event), new in CHECK_TABLE.items():
        if new is not old:
            grouped.setdefault((event, new), []).append(old)
    return [
        f"| {', '.join(s.name for s in olds)} | {event.value} | {new.name} |"
        for (event, new), olds in sorted(grouped.items(), key=lambda kv: (kv[0][1], list(Event).index(kv[0][0])))
    ]


def test_the_architecture_page_shows_the_table_the_code_runs() -> None:
    page = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    block = page.split("<!-- check-table:start -->\n", 1)[1].split("<!-- check-table:end -->", 1)[0]
    expected = ["| from | result | to |", "|---|---|---|", *_rows()]
    assert block.strip().splitlines() == expected, "\n".join(expected)


def test_transition_table_never_enters_maintenance_per_check() -> None:
    assert all(State.MAINTENANCE not in targets for targets in TRANSITIONS.values())


@pytest.mark.parametrize("bad", [{"rise": 0}, {"fall": 0}, {"fall_hard": 0}])
def test_thresholds_must_be_positive(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Thresholds(**{"rise": 1, "fall": 1, "fall_hard": 1, **bad})


def service(n_checks: int = 1, rise: int = 2, fall: int = 2) -> ServiceHealth:
    return ServiceHealth.create("dns", [Thresholds(rise, fall, 1)] * n_checks)


def test_service_needs_a_check() -> None:
    with pytest.raises(ValueError, match="at least one check"):
        ServiceHealth.create("dns", [])


def test_service_announces_once_when_rise_reached_and_withdraws_once() -> None:
    s = service()
    assert s.feed(0, OK, 1).actions == ()
    d = s.feed(0, OK, 2)
    assert d.actions == (Announce("dns", "checks[0]: NOERROR in 1 ms"),)
    assert [str(t) for t in d.transitions] == [
        "dns/checks[0]: rising -> up (NOERROR in 1 ms)",
        "dns: rising -> up (checks[0]: NOERROR in 1 ms)",
    ]
    assert s.feed(0, OK, 3).actions == ()
    assert s.feed(0, FAIL, 4).actions == ()  # falling: still announced
    assert s.announced
    assert s.feed(0, FAIL, 5).actions == (Withdraw("dns", "checks[0]: timeout after 150 ms"),)
    assert s.feed(0, FAIL, 6).actions == ()
    assert s.since == 5


def test_service_is_as_healthy_as_its_worst_check() -> None:
    s = service(n_checks=2, rise=1)
    assert s.feed(0, OK, 1).actions == ()
    assert s.state is D
    assert s.feed(1, OK, 2).actions == (Announce("dns", "checks[1]: NOERROR in 1 ms"),)
    s.feed(1, FAIL, 3)
    assert s.state is F and s.announced
    assert s.feed(1, HARD, 4).actions == (Withdraw("dns", "checks[1]: connection refused"),)


def test_maintenance_withdraws_at_once_and_holds_against_passing_probes() -> None:
    s = service(rise=1)
    s.feed(0, OK, 1)
    d = s.drain("kernel upgrade", 2)
    assert d.actions == (Withdraw("dns", "maintenance: kernel upgrade"),)
    assert s.state is State.MAINTENANCE
    assert s.feed(0, OK, 3).actions == ()  # probes go on, nothing is announced
    assert s.checks[0].state is U
    assert s.undrain(4).actions == (Announce("dns", "maintenance ended"),)


def test_undrain_of_an_unhealthy_service_announces_nothing() -> None:
    s = service()
    s.drain("x", 1)
    d = s.undrain(2)
    assert d.actions == ()
    assert [str(t) for t in d.transitions] == ["dns: maintenance -> down (maintenance ended)"]


def test_drain_while_down_changes_state_but_withdraws_nothing() -> None:
    s = service()
    assert s.drain("x", 1).actions == ()


def test_history_is_bounded() -> None:
    s = service(rise=1, fall=1)
    s.history = 4
    for now in range(10):
        s.feed(0, OK if now % 2 else HARD, now)
    assert len(s.transitions) == 4
    assert s.transitions[-1].at == 9


# (rise, fall, fall_hard, results, decided after each result)
DECIDED = [
    ("undecided until rise passes", 3, 3, 1, [OK, OK, OK], [False, False, True]),
    ("undecided until fall failures", 3, 3, 2, [FAIL, FAIL, FAIL], [False, False, True]),
    ("fall_hard hard failures decide", 3, 3, 2, [HARD, HARD], [False, True]),
    ("a verdict once given stays given", 1, 1, 1, [FAIL, OK, FAIL, OK], [True, True, True, True]),
    ("a pass resets the count towards a down verdict", 3, 2, 5, [FAIL, OK, FAIL, FAIL], [False, False, False, True]),
]


@pytest.mark.parametrize(
    ("rise", "fall", "fall_hard", "results", "decided"), [c[1:] for c in DECIDED], ids=[c[0] for c in DECIDED]
)
def test_check_decided(rise: int, fall: int, fall_hard: int, results: list[Result], decided: list[bool]) -> None:
    check = CheckHealth("dns/s1/checks[0]", Thresholds(rise, fall, fall_hard))
    assert not check.decided
    seen = []
    for now, result in enumerate(results):
        check.feed(result, float(now))
        seen.append(check.decided)
    assert seen == decided


def test_service_is_decided_when_every_check_is_or_in_maintenance() -> None:
    service = ServiceHealth.create("dns/s1", [Thresholds(1, 1, 1), Thresholds(1, 1, 1)])
    service.feed(0, OK, 0.0)
    assert not service.decided
    service.feed(1, FAIL, 0.1)
    assert service.decided
    fresh = ServiceHealth.create("dns/s2", [Thresholds(3, 3, 1)])
    fresh.drain("disk swap", 0.0)
    assert fresh.decided


# Named by the mutants of `make mutation` they kill (docs/architecture.md#mutation-testing).


def test_a_fresh_check_has_no_time_and_no_result_then_remembers_both() -> None:
    check = CheckHealth("c", Thresholds(1, 1, 1))
    assert check.since is None and check.last_result is None
    check.feed(OK, 7.0)
    assert check.since == 7.0 and check.last_result == OK


def test_a_service_passes_the_probes_time_to_its_checks() -> None:
    service = ServiceHealth.create("dns", [Thresholds(1, 1, 1)])
    service.feed(0, OK, 12.5)
    assert service.checks[0].since == 12.5 and service.since == 12.5


def test_drain_and_undrain_are_transitions_from_the_state_before_at_the_time_given() -> None:
    service = ServiceHealth.create("dns", [Thresholds(1, 1, 1)])
    service.feed(0, OK, 1.0)
    drained = service.drain("upgrade", 2.0)
    assert [(t.old, t.new, t.at) for t in drained.transitions] == [(State.UP, State.MAINTENANCE, 2.0)]
    assert service.since == 2.0
    assert service.drain("again", 3.0).transitions == ()  # already drained: no transition
    undrained = service.undrain(4.0)
    assert [(t.old, t.new, t.at) for t in undrained.transitions] == [(State.MAINTENANCE, State.UP, 4.0)]
    assert service.since == 4.0


def test_a_pass_of_a_check_that_is_up_changes_only_its_counts() -> None:
    # The fast path of ServiceHealth.feed: it must decide exactly what the full decision would.
    health = ServiceHealth.create("dns", [Thresholds(2, 2, 1), Thresholds(2, 2, 1)], Damping(DEFAULT_DAMPING))
    ok = Result(Outcome.OK, "NOERROR")
    for check in (0, 0, 1):
        health.feed(check, ok, 1.0)
    assert health.checks[0].state is State.UP and health.state is State.RISING  # check 1 is not up yet
    before = list(health.transitions)
    assert health.feed(0, ok, 2.0) is QUIET  # the other check's doubt does not matter to this one
    assert health.checks[0].passes == 3 and health.transitions == before and health.since is not None
    decision = health.feed(1, ok, 3.0)  # RISING -> UP is no pass of an UP check: the full decision
    assert [type(a).__name__ for a in decision.actions] == ["Announce"] and health.proven
    assert health.feed(1, ok, 4.0) is QUIET


# require: how many checks must pass -------------------------------------------------------------------------------


def with_states(states: list[State], require: int | None) -> ServiceHealth:
    s = ServiceHealth.create("dns", [Thresholds(1, 1, 1)] * len(states), require=require)
    for check, state in zip(s.checks, states, strict=True):
        check._state = state
    return s


@pytest.mark.parametrize(
    ("states", "require", "expected"),
    [
        ([U, D], None, D),  # all (the default): the worst
        ([U, D], 2, D),
        ([U, D], 1, U),  # any: the best
        ([D, F], 1, F),
        ([D, R, U], 2, R),  # at least 2: the second best
        ([U, F, D], 2, F),
        ([U, U, D], 2, U),
        ([D, D, U], 2, D),
        ([R, F, U], 3, R),
    ],
)
def test_a_service_is_as_healthy_as_its_require_th_best_check(
    states: list[State], require: int | None, expected: State
) -> None:
    s = with_states(states, require)
    assert s.state is expected
    assert s.healthy is (expected in (U, F))
    assert s.needed == (require or len(states))


def test_the_order_of_the_checks_does_not_matter() -> None:
    for require in (1, 2, 3):
        seen = {with_states(list(order), require).state for order in ((U, R, D), (D, U, R), (R, D, U))}
        assert len(seen) == 1


@pytest.mark.parametrize("require", [0, 3, -1])
def test_require_is_between_one_and_the_number_of_checks(require: int) -> None:
    with pytest.raises(ValueError, match="require must be between 1 and 2, got"):
        ServiceHealth.create("dns", [Thresholds(1, 1, 1)] * 2, require=require)


def test_with_any_one_failing_check_moves_nothing_and_the_last_one_withdraws() -> None:
    s = ServiceHealth.create("dns", [Thresholds(1, 1, 1)] * 2, require=1)
    assert s.feed(0, OK, 1).actions == (Announce("dns", "checks[0]: NOERROR in 1 ms"),)
    assert s.feed(1, OK, 2).actions == ()
    d = s.feed(0, HARD, 3)
    assert d.actions == () and s.state is U and s.announced  # checks[1] still passes
    assert [str(t) for t in d.transitions] == ["dns/checks[0]: up -> down (connection refused)"]
    assert s.feed(1, FAIL, 4).actions == (Withdraw("dns", "checks[1]: timeout after 150 ms"),)
    assert s.feed(1, OK, 5).actions == (Announce("dns", "checks[1]: NOERROR in 1 ms"),)
