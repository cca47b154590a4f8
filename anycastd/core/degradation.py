"""Soft degradation: a resolver that is slow but answering sheds load instead of leaving. Pure.

Theory of operation
-------------------
A check with ``degraded_when`` keeps the latencies of its last ``window``
passing probes; their median is the signal (``LatencyWindow``). The check turns
*slow* once the median is above ``latency_ms``, and *fast* again only once it
is below ``recover_ms`` (lower): hysteresis, so that a resolver on the edge
does not toggle on every probe. A failed probe is not a latency: failures are
the health machine's (rise, fall, withdrawal), and they leave the window as it
is. Until the window is full nothing is decided: the check is fast.

The service is degraded while any of its checks is slow (``Degradation``), and
then its path is announced with ``degraded_weight`` instead of ``weight``. A
withdrawal stays for real failure: degradation only ever changes the weight.

Flap damping (anycastd.core.damping, the service's settings) counts every
entry into slowness; once its penalty reaches ``suppress``, the service is
*held* degraded, whatever the probes say, until the penalty has decayed below
``reuse``. Holding keeps the lower weight, the safe side. So a resolver that
oscillates around the threshold every 2 s changes its weight a handful of
times, and then not again until it settles.

The machine is one table, ``TABLE``: (state, event) -> next state, every pair
listed. ``Degradation.observe`` only classifies: the checks' verdict and the
damping's hold make one ``Signal``, and the move is looked up.
"""

from __future__ import annotations

import enum
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from anycastd.core.damping import Damping


class Level(enum.Enum):
    """Where a service's weight stands."""

    NORMAL = "normal"  # the configured weight
    DEGRADED = "degraded"  # degraded_weight: a check is slow
    HELD = "held"  # degraded_weight: the checks are fast again, but flap damping holds it until it settles

    def __str__(self) -> str:
        return self.value

    @property
    def degraded(self) -> bool:
        return self is not Level.NORMAL


class Signal(enum.Enum):
    """One observation of a service: its checks' verdict, and whether flap damping holds it."""

    SLOW = "a check is slow"
    FAST = "every check is fast"
    FAST_HELD = "every check is fast, but flap damping holds the service degraded"


_N, _D, _H = Level.NORMAL, Level.DEGRADED, Level.HELD

#: The whole machine: (level, signal) -> next level. Only a SLOW signal enters DEGRADED (and adds a penalty,
#: ``Degradation.observe``); a FAST one leaves it, to HELD while damping holds the service.
TABLE: dict[tuple[Level, Signal], Level] = {
    (_N, Signal.SLOW): _D, (_N, Signal.FAST): _N, (_N, Signal.FAST_HELD): _H,
    (_D, Signal.SLOW): _D, (_D, Signal.FAST): _N, (_D, Signal.FAST_HELD): _H,
    (_H, Signal.SLOW): _D, (_H, Signal.FAST): _N, (_H, Signal.FAST_HELD): _H,
}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One probe's result as the windows read it: each takes what its rule needs."""

    ok: bool
    latency: float | None = None  # seconds, of a passing probe
    degraded: bool = False  # a command exited with one of its rule's codes (and passed)


class Window(Protocol):
    """One check's recent probes and its verdict: slow or not."""

    slow: bool

    def observe(self, sample: Sample) -> bool: ...

    def why(self) -> str: ...


@dataclass(frozen=True)
class LatencyRule:
    """A check's ``degraded_when``: slow above ``latency_ms``, fast again below ``recover_ms``, over the
    median of the last ``window`` passing probes."""

    latency_ms: float
    recover_ms: float
    window: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.recover_ms < self.latency_ms:
            raise ValueError("recover_ms must be above 0 and below latency_ms")
        if self.window < 1:
            raise ValueError("window must be at least 1")


@dataclass(frozen=True)
class ExitRule:
    """A command check's ``degraded_when``: the program says the server struggles by exiting with one of
    ``codes`` (the probe passes); slow after ``window`` such probes in a row, fast after ``window`` others."""

    codes: tuple[int, ...]
    window: int = 3

    def __post_init__(self) -> None:
        if not self.codes or not all(1 <= c <= 255 for c in self.codes):
            raise ValueError("codes must be exit codes from 1 to 255")
        if self.window < 1:
            raise ValueError("window must be at least 1")


class ExitWindow:
    """One command check's last passing probes (degraded exit or not) and its verdict."""

    def __init__(self, rule: ExitRule) -> None:
        self.rule = rule
        self.said: deque[bool] = deque(maxlen=rule.window)
        self.slow = False

    def observe(self, sample: Sample) -> bool:
        """A probe's result (degraded: it exited with one of the rule's codes): whether the check is slow."""
        if sample.ok:
            self.said.append(sample.degraded)
        if len(self.said) == self.rule.window and len(set(self.said)) == 1:
            self.slow = self.said[0]
        return self.slow

    def why(self) -> str:
        codes = ", ".join(str(c) for c in self.rule.codes)
        return f"exited {codes} in its last {self.rule.window} passing probes"


class LatencyWindow:
    """One check's latencies and its verdict, with hysteresis."""

    def __init__(self, rule: LatencyRule) -> None:
        self.rule = rule
        self.latencies: deque[float] = deque(maxlen=rule.window)
        self.slow = False

    @property
    def median_ms(self) -> float | None:
        """The median of the window, once it is full."""
        if len(self.latencies) < self.rule.window:
            return None
        return statistics.median(self.latencies) * 1000.0

    def observe(self, sample: Sample) -> bool:
        """A probe's result: whether the check is slow now."""
        if sample.ok and sample.latency is not None:
            self.latencies.append(sample.latency)
        median = self.median_ms
        if median is not None:
            if self.slow and median < self.rule.recover_ms:
                self.slow = False
            elif not self.slow and median > self.rule.latency_ms:
                self.slow = True
        return self.slow

    def why(self) -> str:
        median = self.median_ms
        shown = f"{median:.1f} ms" if median is not None else "not yet known"
        r = self.rule
        bounds = f"slow above {r.latency_ms:g} ms, fast below {r.recover_ms:g}"
        return f"median latency {shown} over {r.window} probes ({bounds})"


@dataclass(frozen=True)
class Move:
    """A change of level: what the caller announces (the weight) and logs."""

    old: Level
    new: Level
    reason: str

    @property
    def reweighs(self) -> bool:
        """The weight changes (NORMAL to either degraded level or back; DEGRADED and HELD weigh the same)."""
        return self.old.degraded != self.new.degraded


class Degradation:
    """One service's level: its checks' windows (None for a check without ``degraded_when``) and its damping."""

    def __init__(self, rules: Sequence[LatencyRule | ExitRule | None], damping: Damping | None) -> None:
        self.windows: list[Window | None] = [_window(r) for r in rules]
        self.damping = damping
        self.level = Level.NORMAL
        self.changes = 0

    def signal(self, now: float) -> Signal:
        if any(w is not None and w.slow for w in self.windows):
            return Signal.SLOW
        d = self.damping
        if d is not None:
            d.update(now)
            if d.suppressed:
                return Signal.FAST_HELD
        return Signal.FAST

    def observe(self, check: int, sample: Sample, now: float) -> Move | None:
        """Check number ``check``'s probe result at ``now``; the move it makes, if any."""
        window = self.windows[check]
        if window is not None:
            window.observe(sample)
        signal = self.signal(now)
        old = self.level
        new = TABLE[(old, signal)]
        if new is old:
            return None
        if new is Level.DEGRADED and self.damping is not None:
            self.damping.fail(now)  # every entry into slowness counts
        self.level = new
        move = Move(old, new, self.why())
        self.changes += move.reweighs
        return move

    def why(self) -> str:
        """Why the level is what it is, for status and the log."""
        if self.level is Level.HELD and self.damping is not None:
            d = self.damping
            return f"held degraded by flap damping until its penalty decays below {d.settings.reuse:g}"
        slow = [f"checks[{i}]: {w.why()}" for i, w in enumerate(self.windows) if w is not None and w.slow]
        if slow:
            return "; ".join(slow)
        return "every check is fast"


def _window(rule: LatencyRule | ExitRule | None) -> Window | None:
    if rule is None:
        return None
    return LatencyWindow(rule) if isinstance(rule, LatencyRule) else ExitWindow(rule)
