"""What both daemons report about their probes: counters per check, and the JSON of results and transitions.

The sidecar and `anycastd router` share these so that `anycastctl status --json` spells a
probe result and a transition the same way in both modes (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anycastd.checks.dns import ProbeResult
from anycastd.control.protocol import ProbeOutcome, plain
from anycastd.core.clock import iso
from anycastd.core.damping import Damping
from anycastd.core.health import Transition

Clock = Callable[[], float]


@dataclass
class CheckStatus:
    last: ProbeResult | None = None
    last_at: float | None = None
    probes: int = 0
    failures: int = 0
    woken: int = 0  # probes an event brought forward (anycastd.watch.sockdiag)
    confirming: int = 0  # probes that confirmed a failure, with the shorter timeout
    #: How a failure is noticed: "polling", or an event source; and, when polling, why no events.
    detection: str = "polling"
    detection_note: str | None = None


def probe_outcome(
    index: int, result: ProbeResult, at: str | None, wall: Clock, server: str | None = None
) -> ProbeOutcome:
    return ProbeOutcome(
        check=index,
        ok=result.ok,
        outcome=result.outcome.value,
        kind=result.kind,
        reason=result.reason,
        latency_ms=round(result.latency * 1000, 3) if result.latency is not None else None,
        at=at or iso(wall()),
        server=server,
    )


def result_json(index: int, result: ProbeResult, at: str | None, wall: Clock) -> dict[str, Any]:
    return dict(plain(probe_outcome(index, result, at, wall)))


def transition_json(t: Transition, at: str | None) -> dict[str, Any]:
    return {"at": at, "name": t.name, "from": str(t.old), "to": str(t.new), "reason": t.reason}


def damping_json(
    damping: Damping | None, now: float, wall_of: Callable[[float | None], str | None]
) -> dict[str, Any] | None:
    """Flap damping as status shows it: the penalty now and, while suppressed, until when (if it fails no more)."""
    if damping is None:
        return None
    s = damping.settings
    return {
        "penalty": round(damping.penalty(now)),
        "suppressed": damping.suppressed,
        "suppressed_until": wall_of(damping.reuse_at()),
        "suppress": s.suppress,
        "reuse": s.reuse,
        "half_life": s.half_life,
    }
