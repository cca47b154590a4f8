"""Times as status and logs show them: a monotonic instant turned into the wall clock's ISO 8601 (UTC).

The daemons time everything on the monotonic clock (it never jumps); an operator reads wall-clock
times. Both clocks are passed in, so the conversion is pure.
"""

from __future__ import annotations

import time


def iso(unix: float) -> str:
    """``unix`` (seconds since the epoch) as ``2026-12-06T13:40:15.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix % 1 * 1000):03d}Z"


def wall_of(monotonic: float | None, wall_now: float, monotonic_now: float) -> str | None:
    """The wall-clock time of a monotonic instant, given both clocks read now (None stays None)."""
    if monotonic is None:
        return None
    return iso(wall_now - (monotonic_now - monotonic))
