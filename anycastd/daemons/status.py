"""What both daemons report: counters per check, and the one writer of the status document.

The sidecar and `anycastd router` share ``StatusWriter`` so that `anycastctl status --json`
spells a health (its state, maintenance, flap damping, checks and transitions), a probe result
and a transition the same way in both modes. They differ only where the variants do: the
sidecar's entry is a service with its path and prefixes, the router's a server with its
nexthops and routes (docs/operations.md, `status --json`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anycastd import __version__
from anycastd.checks.dns import ProbeResult
from anycastd.config.checks import TEMPLATE_ADDRESS, Check
from anycastd.control.protocol import ProbeOutcome, plain
from anycastd.core.clock import iso, wall_of
from anycastd.core.damping import Damping
from anycastd.core.degradation import Degradation
from anycastd.core.health import ServiceHealth, Transition
from anycastd.daemons.state import Maintenance

Clock = Callable[[], float]


def weight_status(
    configured: int | None, value: int | None, degradation: Degradation | None = None
) -> dict[str, Any] | None:
    """A service's weight as status shows it: what its path carries, what is configured, and why they are
    what they are; None for a service without one (its path carries no link bandwidth)."""
    if configured is None:
        return None
    out: dict[str, Any] = {"value": value, "configured": configured, "why": "configured"}
    if degradation is not None:
        out["level"] = str(degradation.level)
        out["changes"] = degradation.changes
        if degradation.level.degraded:
            out["why"] = f"{degradation.level}: {degradation.why()}"
    return out


#: The status document's format: fields are only ever added; a change in meaning bumps it.
STATUS_VERSION = 1
#: How many of a health's last transitions status shows.
TRANSITIONS_SHOWN = 10


@dataclass
class CheckStatus:
    last: ProbeResult | None = None
    last_at: float | None = None
    probes: int = 0
    failures: int = 0
    woken: int = 0  # probes an event brought forward (anycastd.watch.triggers)
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


def maintenance_json(m: Maintenance | None) -> dict[str, Any] | None:
    return {"reason": m.reason, "who": m.who, "since": iso(m.since), "soft": m.soft} if m else None


class StatusWriter:
    """Writes what both daemons' status documents share, in one spelling."""

    def __init__(self, clock: Clock, wall: Clock) -> None:
        self.clock = clock
        self.wall = wall

    def wall_of(self, monotonic: float | None) -> str | None:
        """A monotonic instant as the wall clock's ISO time (None stays None)."""
        return wall_of(monotonic, self.wall(), self.clock())

    def health(
        self,
        health: ServiceHealth,
        checks: Sequence[Check],
        statuses: Sequence[CheckStatus],
        maintenance: Maintenance | None,
    ) -> dict[str, Any]:
        """One health's entry: its state, since when, maintenance, flap damping, checks and transitions."""
        return {
            "state": str(health.state),
            "since": self.wall_of(health.since),
            "maintenance": maintenance_json(maintenance),
            "damping": damping_json(health.damping, self.clock(), self.wall_of),
            "require": health.needed,  # how many of the checks must pass
            "checks": [
                self.check(i, check, health, status)
                for i, (check, status) in enumerate(zip(checks, statuses, strict=True))
            ],
            "transitions": [transition_json(t, self.wall_of(t.at)) for t in health.transitions[-TRANSITIONS_SHOWN:]],
        }

    def check(self, index: int, check: Check, health: ServiceHealth, status: CheckStatus) -> dict[str, Any]:
        last = status.last
        return {
            "index": index,
            "kind": check.kind,
            "transport": check.transport if check.kind == "dns" else None,
            "address": None if check.kind == "command" and check.address == TEMPLATE_ADDRESS else str(check.address),
            "state": str(health.checks[index].state),
            "probes": status.probes,
            "failures": status.failures,
            "detection": status.detection,
            "detection_note": status.detection_note,
            "woken": status.woken,
            "confirming": status.confirming,
            "last": result_json(index, last, self.wall_of(status.last_at), self.wall) if last else None,
        }

    @staticmethod
    def document(
        mode: str, source: str, problem: str | None, services: list[dict[str, Any]], **sections: Any
    ) -> dict[str, Any]:
        """The whole document: its version, the variant (``mode``), the configuration, then each section."""
        return {
            "version": STATUS_VERSION,
            "anycastd": __version__,  # the running daemon's version: anycastctl says so when its own differs
            "mode": mode,
            "config": source,
            "problem": problem,
            "services": services,
            **sections,
        }
