"""BFD's flaps through flap damping: a session that keeps failing is held back until it settles.

Theory of operation
-------------------
A lossy link makes BFD flap: each time three packets in a row are lost, the
router declares the session down, resets BGP and drops the server's paths;
ExaBGP connects again at once and the paths come back. Every flap is a route
change in the router's FIB, which anycastd's own flap damping never sees: its
probes of the local resolver all pass.

So each BFD session's failures (up -> down, BFD's own verdict) feed a ``Damping`` of
its own, with the service's defaults (anycastd.core.damping). Once a neighbor's
penalty reaches ``suppress`` the neighbor is *held*: anycastd withdraws every
prefix from that neighbor alone (the server stays in service through its
other ToR) and announces nothing to it until the penalty has decayed below
``reuse``. Holding never withdraws anything from the other neighbors, and a
single flap (below ``suppress``) is forgotten as the penalty decays.

The decision is pure (``SessionDamping``); ``SessionFlaps`` carries it out
through the announcer and checks for the end of a hold every second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from anycastd.core.damping import DEFAULT_DAMPING, Damping, DampingSettings
from anycastd.errors import AnnounceError

log = logging.getLogger(__name__)


class SessionDamping:
    """One ``Damping`` per BFD session (neighbor address); pure: every call is given ``now``."""

    def __init__(self, neighbors: Iterable[str], settings: DampingSettings = DEFAULT_DAMPING) -> None:
        self.damping = {n: Damping(settings) for n in neighbors}
        self.last: dict[str, str] = dict.fromkeys(self.damping, "unknown")

    def observe(self, neighbor: str, state: str, now: float) -> bool:
        """A session's new state; True if this failure begins a hold."""
        if neighbor not in self.damping:
            return False
        old, self.last[neighbor] = self.last[neighbor], state
        d = self.damping[neighbor]
        # BFD's own verdict only: "unknown" is bfdd not answering (restarted, frozen), no failure of the link
        if old != "up" or state != "down":
            return False
        was = d.suppressed
        d.fail(now)
        return d.suppressed and not was

    def settled(self, now: float) -> list[str]:
        """The neighbors whose hold ends now."""
        return [n for n, d in self.damping.items() if d.update(now)]

    def clear(self) -> list[str]:
        """Forget every session's failures (an operator vouches for the links); the neighbors that were held."""
        held = sorted(self.held)
        for d in self.damping.values():
            d.clear()
        return held

    @property
    def held(self) -> set[str]:
        return {n for n, d in self.damping.items() if d.suppressed}


class SessionFlaps:
    """Carries out SessionDamping: holds and releases neighbors through ``hold(neighbor, held)``."""

    def __init__(
        self,
        damping: SessionDamping,
        hold: Callable[[str, bool], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.damping = damping
        self.hold = hold
        self.clock = clock
        self.holds = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, neighbor: str, state: str) -> None:
        """From bfdd's notifications (on the event loop): a failure that begins a hold holds at once."""
        if self.damping.observe(neighbor, state, self.clock()):
            self.holds += 1
            d = self.damping.damping[neighbor]
            log.warning(
                "BFD with %s keeps failing (flap penalty %.0f): nothing is announced to it until it settles "
                "(below %g); the other neighbors carry the service",
                neighbor,
                d.penalty(self.clock()),
                d.settings.reuse,
            )
            self._spawn(self._set(neighbor, True))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set(self, neighbor: str, held: bool) -> None:
        try:
            await self.hold(neighbor, held)
        except AnnounceError as exc:
            log.error("could not %s %s: %s", "hold back" if held else "release", neighbor, exc)

    async def forgive(self) -> list[str]:
        """`anycastctl announce`: every penalty cleared, every held neighbor released now; which were held."""
        released = self.damping.clear()
        for neighbor in released:
            log.warning("BFD with %s: flap penalty cleared by an operator; announcing to it again", neighbor)
            await self._set(neighbor, False)
        return released

    async def run(self) -> None:
        """Until cancelled: release every neighbor that has settled, checked every second."""
        while True:
            for neighbor in self.damping.settled(self.clock()):
                log.warning("BFD with %s has settled: announcing to it again", neighbor)
                await self._set(neighbor, False)
            await asyncio.sleep(1.0)

    def describe(self) -> dict[str, Any]:
        now = self.clock()
        return {
            n: {"held": d.suppressed, "penalty": round(d.penalty(now)), "reuse_at_in": _left(d.reuse_at(), now)}
            for n, d in self.damping.damping.items()
        }


def _left(at: float | None, now: float) -> float | None:
    return round(max(0.0, at - now), 1) if at is not None else None
