"""Zone freshness: is a secondary's copy of a zone behind its primary's, and for how long.

Theory of operation
-------------------
Zone serials are compared with RFC 1982 serial arithmetic (SERIAL_BITS = 32): ``a`` is behind ``b`` when
``b`` is ahead of it by less than half the number space, so a serial that wrapped past 2**32 - 1 is still
newer. Two serials exactly half the space apart are undefined in RFC 1982 and are taken as *not* behind: an
undefined comparison must not withdraw a server.

``Freshness`` keeps, per zone, the instant the local serial was first seen behind the primary's and the
primary's last serial. A zone may be behind for up to ``max_lag`` seconds (a NOTIFY and an IXFR take a
moment); longer fails. When the primary does not answer, the local serial is compared with the last serial
the primary gave: a primary that is down cannot make its secondaries look fresh, and does not by itself make
them stale either. Nothing here does I/O or reads a clock: the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

HALF = 1 << 31
SPACE = 1 << 32


def behind(a: int, b: int) -> bool:
    """RFC 1982 3.2: serial ``a`` is less than serial ``b``."""
    return a != b and (b - a) % SPACE < HALF


@dataclass(frozen=True)
class Verdict:
    fresh: bool
    reason: str


def _lagging(seconds: float) -> str:
    return f"{seconds:.1f} s"


class Freshness:
    """Per zone: since when the local copy has been behind the primary's, and the primary's last serial."""

    def __init__(self) -> None:
        self.behind_since: dict[str, float] = {}
        self.primary_serial: dict[str, int] = {}

    def observe(self, zone: str, local: int, primary: int | None, now: float, max_lag: float) -> Verdict:
        """Judge ``zone`` at ``now``: the local serial, and the primary's (None: it did not answer)."""
        note = ""
        if primary is None:
            last = self.primary_serial.get(zone)
            if last is None:  # never heard from: nothing was ever behind it either
                return Verdict(True, f"{zone} serial {local}; the primary did not answer (nothing to compare)")
            primary, note = last, " (the primary did not answer: its last serial)"
        else:
            self.primary_serial[zone] = primary
        if not behind(local, primary):
            self.behind_since.pop(zone, None)
            return Verdict(True, f"{zone} serial {local}, the primary's {primary}{note}")
        since = self.behind_since.setdefault(zone, now)
        lag = now - since
        reason = f"{zone} serial {local}, behind the primary's {primary}{note} for {_lagging(lag)}"
        if lag > max_lag:
            return Verdict(False, f"{reason}, more than max_lag ({max_lag:g} s)")
        return Verdict(True, f"{reason} (max_lag {max_lag:g} s)")
