"""The health state machine: pure, no I/O, no clock.

Theory of operation
-------------------
Each check of a service owns a ``CheckHealth``. The loop that runs the probe
feeds every result, with the time it was taken, into it; the machine counts
consecutive passes and failures and moves between four states::

              pass (n < rise)                 fail (n < fall)
      DOWN ----------------> RISING    UP -----------------> FALLING
        ^  <----------------   |        ^  <-----------------   |
        |      fail            |        |        pass           |
        |                      | pass (n == rise)               |
        |                      v                                |
        |                     UP                                |
        +------------------------------------------------------+
                  fail (n == fall, or a hard failure)

With ``rise == 1`` DOWN goes straight to UP; with ``fall == 1`` (or a hard
failure, see below) UP goes straight to DOWN. A check starts DOWN, so nothing
is announced until the first probes have passed ``rise`` times.

Failures come in two kinds. A *hard* failure is unambiguous evidence that the
resolver is gone (connection refused: nothing listens on the port); it needs
only ``fall_hard`` consecutive hard failures. Any other failure (timeout, bad
rcode, wrong answer, malformed response) needs ``fall`` consecutive failures,
so that one lost packet does not move traffic.

A ``ServiceHealth`` aggregates the checks of one service. ``require`` says
how many must pass: all of them (the default), any one, or at least N. Its
state is that of its ``require``-th best check, with DOWN < RISING <
FALLING < UP: the worst check's state when all are required, the best
check's when any one will do. An operator's drain makes it MAINTENANCE
whatever the checks say. The service is announced exactly when its state is
UP or FALLING: at least ``require`` checks have passed ``rise`` times and not
failed ``fall`` times since. Whenever that changes, ``feed`` returns one
``Announce`` or ``Withdraw`` for the caller to carry out.

The machine is one table, ``CHECK_TABLE``: (state, event) -> next state,
every pair listed, staying put included. ``CheckHealth.feed`` only counts:
it turns a result and the consecutive counts into one ``Event`` (a pass
short of ``rise``, the pass that reaches it, a failure short of ``fall``,
the failure that reaches ``fall`` or ``fall_hard``) and looks the move up.
A service's actions have a table of their own, ``ACTIONS``: what to do when
"announced" (UP or FALLING, and not drained) changes. docs/architecture.md
shows both tables; tests/unit/test_health.py checks the page against them.

A pair missing from the table is a bug (a check never enters MAINTENANCE,
only a service does): ``CheckHealth`` raises ``IllegalTransition`` and
leaves its state unchanged.

Two things stand between the probes' verdict (``healthy``) and what is
announced (``announced``). A drain, above. And flap damping
(anycastd.core.damping): a service whose failures come too often is
*suppressed*, announced again only once its penalty has decayed; damping
never holds back a withdrawal. ``path_of`` then says what the sidecar puts
on the wire: the path, no path, or, with the ``graceful-shutdown`` failure
action, the path tagged GRACEFUL_SHUTDOWN (RFC 8326) while the service
fails after having been announced, so that a router that honours it keeps
the path only when no healthy one is left. A *soft* drain (``anycastctl
withdraw --soft``) tags the path the same way instead of withdrawing it, for
as long as the probes pass: draining every server at once degrades the
service instead of removing it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from anycastd.core.damping import Damping
from anycastd.errors import AnycastdError


class State(enum.IntEnum):
    """Ordered from worst to best, so a service is as healthy as its worst check."""

    MAINTENANCE = 0
    DOWN = 1
    RISING = 2
    FALLING = 3
    UP = 4

    def __str__(self) -> str:
        return self.name.lower()


ANNOUNCED_STATES = frozenset({State.UP, State.FALLING})


class Event(enum.Enum):
    """One probe result, classified by the consecutive counts it makes."""

    PASS = "pass, fewer than `rise` in a row"  # noqa: S105 (an event, not a password)
    RISE = "pass, `rise` in a row"
    FAIL = "failure, fewer than `fall` in a row (and fewer than `fall_hard` hard ones)"
    FALL = "`fall` failures in a row, or `fall_hard` hard failures in a row"


_D, _R, _U, _F = State.DOWN, State.RISING, State.UP, State.FALLING

#: The check machine, whole: (state, event) -> next state. A pass in an announced state is as good as
#: ``rise`` passes (the check already proved itself); any failure short of UP goes back to DOWN.
CHECK_TABLE: dict[tuple[State, Event], State] = {
    (_D, Event.PASS): _R, (_D, Event.RISE): _U, (_D, Event.FAIL): _D, (_D, Event.FALL): _D,
    (_R, Event.PASS): _R, (_R, Event.RISE): _U, (_R, Event.FAIL): _D, (_R, Event.FALL): _D,
    (_U, Event.PASS): _U, (_U, Event.RISE): _U, (_U, Event.FAIL): _F, (_U, Event.FALL): _D,
    (_F, Event.PASS): _U, (_F, Event.RISE): _U, (_F, Event.FAIL): _F, (_F, Event.FALL): _D,
}  # fmt: skip

#: Every move a check may make (derived from the table; staying put is not listed).
TRANSITIONS: dict[State, frozenset[State]] = {
    state: frozenset(new for (old, _), new in CHECK_TABLE.items() if old is state and new is not state)
    for state in State
}


class Outcome(enum.Enum):
    """What one probe said about the resolver."""

    OK = "ok"
    FAIL = "fail"  # ambiguous: timeout, bad rcode, wrong answer
    HARD_FAIL = "hard_fail"  # unambiguous: nothing listens (connection refused)


@dataclass(frozen=True)
class Result:
    """One probe's verdict, as the health core sees it."""

    outcome: Outcome
    reason: str


class IllegalTransition(AnycastdError):
    """A state machine was asked to make a move its transition table forbids."""


@dataclass(frozen=True)
class Thresholds:
    rise: int
    fall: int
    fall_hard: int

    def __post_init__(self) -> None:
        for name in ("rise", "fall", "fall_hard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True)
class Transition:
    """A change of state, with the reason a person reads in the log."""

    name: str
    old: State
    new: State
    reason: str
    at: float

    def __str__(self) -> str:
        return f"{self.name}: {self.old} -> {self.new} ({self.reason})"


@dataclass(frozen=True)
class Announce:
    service: str
    reason: str


@dataclass(frozen=True)
class Withdraw:
    service: str
    reason: str


Action = Announce | Withdraw

#: A service's actions, whole: (announced before, announced after) -> what to do. Nothing else acts.
ACTIONS: dict[tuple[bool, bool], type[Announce] | type[Withdraw] | None] = {
    (False, False): None,
    (False, True): Announce,
    (True, False): Withdraw,
    (True, True): None,
}


@dataclass(frozen=True)
class Decision:
    """What one event changed: transitions to log, actions to carry out, and notes (flap damping) to log."""

    transitions: tuple[Transition, ...] = ()
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()


#: The decision of a result that changes nothing.
QUIET = Decision()


class CheckHealth:
    """Rise/fall hysteresis for one check."""

    def __init__(self, name: str, thresholds: Thresholds) -> None:
        self.name = name
        self.thresholds = thresholds
        self._state = State.DOWN
        self.passes = 0
        self.fails = 0
        self.hard_fails = 0
        self.since: float | None = None
        self.last_result: Result | None = None
        #: The check has given a verdict: it reached UP, or failed enough to count as down. A restarted
        #: router-side prober waits for every server's verdict before it changes a route.
        self.decided = False

    @property
    def state(self) -> State:
        return self._state

    def _count(self, result: Result) -> Event:
        """Update the consecutive counts with ``result`` and say what it amounts to."""
        t = self.thresholds
        if result.outcome is Outcome.OK:
            self.passes += 1
            self.fails = 0
            self.hard_fails = 0
            return Event.RISE if self.passes >= t.rise else Event.PASS
        self.passes = 0
        self.fails += 1
        self.hard_fails = self.hard_fails + 1 if result.outcome is Outcome.HARD_FAIL else 0
        return Event.FALL if self.fails >= t.fall or self.hard_fails >= t.fall_hard else Event.FAIL

    def feed(self, result: Result, now: float) -> Transition | None:
        """Count one probe result; return the transition it caused, if any."""
        self.last_result = result
        event = self._count(result)
        old = self._state
        new = CHECK_TABLE.get((old, event))
        if new is None:
            raise IllegalTransition(f"{self.name}: no move from {old} on {event.name}")
        if event in (Event.RISE, Event.FALL) or new is State.UP:
            self.decided = True
        if new is old:
            return None
        self._state = new
        self.since = now
        return Transition(self.name, old, new, result.reason, now)


@dataclass
class ServiceHealth:
    """The checks of one service and the operator's drain, as one verdict."""

    name: str
    checks: list[CheckHealth]
    maintenance_reason: str | None = None
    since: float | None = None
    transitions: list[Transition] = field(default_factory=list)
    history: int = 20
    damping: Damping | None = None  # None: no flap damping
    #: Announced since anycastd started or since the last drain ended: only such a service may keep its
    #: path tagged GRACEFUL_SHUTDOWN when it fails (``path_of``); one that never passed is not announced.
    proven: bool = False
    #: How many checks must pass; None: all of them.
    require: int | None = None
    #: The drain in force is soft (`anycastctl withdraw --soft`): the path stays, tagged GRACEFUL_SHUTDOWN,
    #: while the probes pass (``path_of``).
    soft: bool = False

    @classmethod
    def create(
        cls, name: str, thresholds: Sequence[Thresholds], damping: Damping | None = None, require: int | None = None
    ) -> ServiceHealth:
        if not thresholds:
            raise ValueError(f"service {name} needs at least one check")
        if require is not None and not 1 <= require <= len(thresholds):
            raise ValueError(f"service {name}: require must be between 1 and {len(thresholds)}, got {require}")
        checks = [CheckHealth(f"{name}/checks[{i}]", t) for i, t in enumerate(thresholds)]
        return cls(name, checks, damping=damping, require=require)

    @property
    def needed(self) -> int:
        """How many checks must pass for the service to be healthy."""
        return self.require or len(self.checks)

    @property
    def state(self) -> State:
        if self.maintenance_reason is not None:
            return State.MAINTENANCE
        return self._needed_best()

    @property
    def probes_pass(self) -> bool:
        """What the checks alone conclude, drained or not: at least ``require`` of them UP or FALLING."""
        return self._needed_best() in ANNOUNCED_STATES

    def _needed_best(self) -> State:
        """The state of the ``require``-th best check: the service is as healthy as that one."""
        return sorted(check.state for check in self.checks)[-self.needed]

    @property
    def healthy(self) -> bool:
        """What the probes conclude: at least ``require`` checks UP or FALLING, and no drain."""
        return self.state in ANNOUNCED_STATES

    @property
    def suppressed(self) -> bool:
        """Flap damping holds the service back until its penalty decays."""
        return self.damping is not None and self.damping.suppressed

    @property
    def announced(self) -> bool:
        return self.healthy and not self.suppressed

    @property
    def decided(self) -> bool:
        """Every check has given a verdict (see ``CheckHealth.decided``); maintenance needs none."""
        return self.maintenance_reason is not None or all(check.decided for check in self.checks)

    def _damp(self, old: State, new: State, now: float) -> tuple[str, ...]:
        """Count a failure (the probes, not a drain, took the service out of its healthy states) or end a
        suppression whose penalty has decayed; say what changed."""
        d = self.damping
        if d is None:
            return ()
        s = d.settings
        if old in ANNOUNCED_STATES and new not in ANNOUNCED_STATES and new is not State.MAINTENANCE:
            was_suppressed = d.suppressed
            d.fail(now)
            if d.suppressed and not was_suppressed:
                wait = (d.reuse_at() or now) - now
                return (
                    f"{self.name}: flap damping: suppressed, penalty {d.penalty(now):.0f} >= {s.suppress:g}; "
                    f"announced again once it decays below {s.reuse:g} (in {wait:.1f} s if it fails no more)",
                )
            return ()
        if d.update(now):
            return (f"{self.name}: flap damping: no longer suppressed (penalty {d.penalty(now):.0f} < {s.reuse:g})",)
        return ()

    def _decide(self, old: State, was: bool, reason: str, now: float, inner: Transition | None) -> Decision:
        transitions = [inner] if inner else []
        new = self.state
        notes = self._damp(old, new, now)
        if self.announced:
            self.proven = True
        elif new is State.MAINTENANCE:
            self.proven = False
        if new != old:
            outer = Transition(self.name, old, new, reason, now)
            transitions.append(outer)
            self.since = now
        self.transitions.extend(transitions)
        del self.transitions[: -self.history]
        action = ACTIONS[(was, self.announced)]
        return Decision(tuple(transitions), (action(self.name, reason),) if action else (), notes)

    def feed(self, check: int, result: Result, now: float) -> Decision:
        """Record the result of check number ``check`` taken at ``now``."""
        one = self.checks[check]
        if result.outcome is Outcome.OK and one.state is State.UP and not self.suppressed:
            # A pass of a check that is UP changes only its counts: the service's state, its damping (not
            # suppressed, so nothing to end) and what is announced stay. The common case, hundreds of times
            # a second on a router, so the service's decision is skipped.
            one.feed(result, now)
            return QUIET
        old, was = self.state, self.announced
        inner = one.feed(result, now)
        return self._decide(old, was, f"checks[{check}]: {result.reason}", now, inner)

    def drain(self, reason: str, now: float, soft: bool = False) -> Decision:
        """Enter maintenance: withdraw at once, whatever the probes say; ``soft`` keeps the path, tagged
        GRACEFUL_SHUTDOWN, while they pass (``path_of``)."""
        old, was = self.state, self.announced
        self.maintenance_reason = reason
        self.soft = soft
        return self._decide(old, was, f"maintenance: {reason}", now, None)

    def forgive(self, now: float) -> Decision:
        """Clear the flap penalty (``anycastctl announce``): announced again now if the checks are up."""
        old, was = self.state, self.announced
        if self.damping is not None:
            self.damping.clear()
        return self._decide(old, was, "flap penalty cleared by an operator", now, None)

    def undrain(self, now: float) -> Decision:
        """Leave maintenance: announced again as soon as the checks are up."""
        old, was = self.state, self.announced
        self.maintenance_reason = None
        self.soft = False
        return self._decide(old, was, "maintenance ended", now, None)


class Path(enum.Enum):
    """What the sidecar announces for a service."""

    WITHDRAWN = "withdrawn"
    ANNOUNCED = "announced"
    GRACEFUL_SHUTDOWN = "graceful-shutdown"  # announced, tagged GRACEFUL_SHUTDOWN (65535:0, RFC 8326)

    def __str__(self) -> str:
        return self.value


#: The GRACEFUL_SHUTDOWN well-known community (RFC 8326), as ExaBGP and FRR write it.
GRACEFUL_SHUTDOWN = "65535:0"


def path_of(health: ServiceHealth, graceful_shutdown: bool) -> Path:
    """The path for ``health``: announced when it is. Tagged GRACEFUL_SHUTDOWN instead of withdrawn in two
    cases: a soft drain while the probes pass (and flap damping does not hold the service back), and a
    failure of a service announced before it when ``graceful_shutdown`` is its failure action. Any other
    drain, and a soft one whose probes fail, withdraws."""
    if health.announced:
        return Path.ANNOUNCED
    if health.state is State.MAINTENANCE:
        soft_drained = health.soft and health.probes_pass and not health.suppressed
        return Path.GRACEFUL_SHUTDOWN if soft_drained else Path.WITHDRAWN
    if graceful_shutdown and health.proven:
        return Path.GRACEFUL_SHUTDOWN
    return Path.WITHDRAWN
