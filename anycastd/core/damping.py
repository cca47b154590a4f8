"""Flap damping: a resolver that keeps failing and recovering is kept out until it settles.

Theory of operation
-------------------
In the spirit of BGP route flap damping (RFC 2439), one ``Damping`` per
service (per server of a service, on the router side) holds a *penalty*.
Every failure (the service leaving its healthy states because of its
probes, never because of a drain) adds ``penalty``; the penalty decays
exponentially with ``half_life``. When a failure takes it to ``suppress``
or more, the service is *suppressed*: its probes go on, but it is not
announced again until the penalty has decayed below ``reuse``. The penalty
never exceeds the ceiling ``reuse * 2 ** (max_suppress / half_life)``, so a
suppression that begins with the flapping over ends within
``max_suppress`` seconds.

Damping only ever delays a *re-announcement*: a withdrawal is never held
back, and a single failure (``penalty`` below ``suppress``) followed by a
recovery re-announces after the usual ``rise`` passes with nothing added.

With the defaults (1000 per failure, half-life 15 s, suppress at 2000,
reuse below 750, at most 60 s), a resolver that fails every 2 s is
suppressed at its third failure: five route changes (withdraw, announce,
withdraw, announce, withdraw), then none for as long as it flaps
(docs/benchmarks.md has the lab's count).

Pure: no clock of its own; every call is given ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DampingSettings:
    penalty: float = 1000.0  # added by each failure
    half_life: float = 15.0  # seconds for the penalty to halve
    suppress: float = 2000.0  # a failure that takes the penalty to this suppresses
    reuse: float = 750.0  # a suppressed service is announced again below this
    max_suppress: float = 60.0  # the longest suppression after the last failure

    def __post_init__(self) -> None:
        if not 0 < self.reuse < self.suppress:
            raise ValueError("reuse must be above 0 and below suppress")
        if self.penalty <= 0 or self.half_life <= 0 or self.max_suppress <= 0:
            raise ValueError("penalty, half_life and max_suppress must be above 0")

    @property
    def ceiling(self) -> float:
        """The highest penalty: it decays to ``reuse`` in exactly ``max_suppress`` seconds."""
        return self.reuse * 2 ** (self.max_suppress / self.half_life)


DEFAULT_DAMPING = DampingSettings()


class Damping:
    """One service's penalty and whether it is suppressed."""

    def __init__(self, settings: DampingSettings) -> None:
        self.settings = settings
        self._penalty = 0.0
        self._at = 0.0  # when _penalty was last computed
        self.suppressed = False

    def penalty(self, now: float) -> float:
        """The penalty decayed to ``now``."""
        elapsed = max(0.0, now - self._at)
        return self._penalty * 2 ** (-elapsed / self.settings.half_life)

    def fail(self, now: float) -> None:
        """Count one failure; suppress when it takes the penalty to ``suppress``."""
        s = self.settings
        self._penalty = min(self.penalty(now) + s.penalty, s.ceiling)
        self._at = now
        if self._penalty >= s.suppress:
            self.suppressed = True

    def update(self, now: float) -> bool:
        """End a suppression whose penalty has decayed below ``reuse``; True if it ended now."""
        if self.suppressed and self.penalty(now) < self.settings.reuse:
            self.suppressed = False
            return True
        return False

    def clear(self) -> None:
        """Forget every failure (an operator vouches for the resolver: ``anycastctl announce``)."""
        self._penalty = 0.0
        self.suppressed = False

    def reuse_at(self) -> float | None:
        """When a suppression ends if no failure comes first (None: not suppressed)."""
        if not self.suppressed:
            return None
        return self._at + self.settings.half_life * math.log2(self._penalty / self.settings.reuse)
