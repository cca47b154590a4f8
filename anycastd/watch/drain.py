"""Knowing when a withdrawn node is quiet: measured, not assumed.

Theory of operation
-------------------
Withdrawing a route is not the end of traffic: the router has to process the
withdrawal and queries already on the wire still arrive. A resolver stopped
too early drops them. So a drain waits until no packet has reached the
service addresses for ``quiet`` seconds, and counts them to know.

The count comes from a ``TrafficMeter``: in production an nftables table of
anycastd's own (anycastd.watch.nft_meter). ``QuietWatch`` is the pure decision:
fed readings and times, it says waiting, drained or timed out.
``wait_quiet`` is the loop that reads and sleeps. This module is pure but for
that loop's injected clock and sleep, and is mutation-tested (make mutation).

If the counters cannot be read (no nft, no permission, a ruleset flush
that took the table away twice), the wait says so and falls back to the
fixed ``drain.fallback`` timer: a documented guess is better than none, but
it is reported as a guess.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from anycastd.core.net import IPAddress
from anycastd.errors import AnycastdError

log = logging.getLogger(__name__)

POLL = 0.1  # seconds between counter readings while waiting


class MeterError(AnycastdError):
    """Traffic to the service addresses could not be measured."""


class Verdict(enum.Enum):
    WAITING = "waiting"
    DRAINED = "drained"
    TIMED_OUT = "timed_out"


@dataclass
class QuietWatch:
    """Pure: has the packet count stayed the same for ``quiet`` seconds, before ``timeout``?"""

    quiet: float
    timeout: float
    started: float
    baseline: int | None = None
    last: int | None = None
    last_change: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_change = self.started

    @property
    def packets(self) -> int:
        """Packets seen since the first reading."""
        return 0 if self.baseline is None or self.last is None else self.last - self.baseline

    def feed(self, count: int, now: float) -> Verdict:
        if self.last is None:
            self.baseline = self.last = count
        elif count < self.last:  # the table was re-created: its counters began again from 0
            self.baseline = -self.packets
            self.last, self.last_change = count, now
        elif count != self.last:
            self.last, self.last_change = count, now
        if now - self.last_change >= self.quiet:
            return Verdict.DRAINED
        if now - self.started >= self.timeout:
            return Verdict.TIMED_OUT
        return Verdict.WAITING


@dataclass(frozen=True)
class DrainReport:
    verdict: Verdict
    method: str  # "nftables" or "timer"
    waited: float
    packets: int | None  # seen after the withdrawal; None when not measured
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "drained": self.verdict is Verdict.DRAINED,
            "verdict": self.verdict.value,
            "method": self.method,
            "waited": round(self.waited, 3),
            "packets": self.packets,
            "note": self.note,
        }


class TrafficMeter(Protocol):
    async def read(self, addresses: Sequence[IPAddress]) -> int:
        """Packets received for ``addresses`` from elsewhere, a running total. Raises MeterError."""
        ...

    async def close(self) -> None: ...


class InMemoryMeter:
    """For tests: counts come from a function of the addresses, or it fails. (Not mutated: it is the fake.)"""

    def __init__(self, count: Callable[[Sequence[IPAddress]], int] | None = None, error: str | None = None) -> None:
        self.count = count or (lambda _: 0)  # pragma: no mutate
        self.error = error  # pragma: no mutate
        self.reads = 0  # pragma: no mutate

    async def read(self, addresses: Sequence[IPAddress]) -> int:
        self.reads += 1  # pragma: no mutate
        if self.error:  # pragma: no mutate
            raise MeterError(self.error)  # pragma: no mutate
        return self.count(addresses)  # pragma: no mutate

    async def close(self) -> None:
        pass


async def wait_quiet(
    meter: TrafficMeter,
    addresses: Sequence[IPAddress],
    *,
    quiet: float,
    timeout: float,
    fallback: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DrainReport:
    """Wait until no packet reached ``addresses`` for ``quiet`` seconds, or ``timeout``."""
    started = clock()
    watch = QuietWatch(quiet, timeout, started)
    while True:
        try:
            count = await meter.read(addresses)
        except MeterError as exc:
            spent = clock() - started
            rest = max(0.0, min(fallback, timeout) - spent)
            note = f"could not measure traffic ({exc}); waited the fixed drain.fallback of {fallback:g} s instead"
            log.warning("%s", note)
            await sleep(rest)
            return DrainReport(Verdict.DRAINED, "timer", clock() - started, None, note)
        verdict = watch.feed(count, clock())
        if verdict is not Verdict.WAITING:
            note = (
                f"no packet for {quiet:g} s"
                if verdict is Verdict.DRAINED
                else f"still receiving after {timeout:g} s ({watch.packets} packets since the withdrawal)"
            )
            return DrainReport(verdict, "nftables", clock() - started, watch.packets, note)
        await sleep(POLL)
