"""Knowing when a withdrawn node is quiet: measured, not assumed.

Theory of operation
-------------------
Withdrawing a route is not the end of traffic: the router has to process the
withdrawal and queries already on the wire still arrive. A resolver stopped
too early drops them. So a drain waits until no packet has reached the
service addresses for ``quiet`` seconds, and counts them to know.

The count comes from an nftables table of anycastd's own (``inet
anycastd``): one counter rule per service address on the input hook, for
packets that did not come from this host itself (anycastd's own probes of
the service address arrive on ``lo`` and must not keep the node "busy").
``QuietWatch`` is the pure decision: fed readings and times, it says
waiting, drained or timed out. ``wait_quiet`` is the loop that reads and
sleeps.

If the counters cannot be read (no nft, no permission, a ruleset flush
that took the table away twice), the wait says so and falls back to the
fixed ``drain.fallback`` timer: a documented guess is better than none, but
it is reported as a guess.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from anycastd.errors import AnycastdError
from anycastd.schema import IPAddress
from anycastd.syntax import nft_word

log = logging.getLogger(__name__)

TABLE = "anycastd"
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
    """For tests: counts come from a function of the addresses, or it fails."""

    def __init__(self, count: Callable[[Sequence[IPAddress]], int] | None = None, error: str | None = None) -> None:
        self.count = count or (lambda _: 0)
        self.error = error
        self.reads = 0

    async def read(self, addresses: Sequence[IPAddress]) -> int:
        self.reads += 1
        if self.error:
            raise MeterError(self.error)
        return self.count(addresses)

    async def close(self) -> None:
        pass


def nft_ruleset(addresses: Iterable[IPAddress]) -> str:
    """One atomic nft transaction: (re)create the table with a counter per address."""
    lines = [
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain input {",
        "    type filter hook input priority -200; policy accept;",
        '    iifname "lo" return',
    ]
    for a in sorted(addresses, key=lambda a: (a.version, a)):
        family = "ip" if a.version == 4 else "ip6"
        lines.append(f'    {family} daddr {nft_word(a)} counter comment "{nft_word(a)}"')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def parse_counters(text: str) -> dict[str, int]:
    """Packets per address from ``nft -j list table inet anycastd``."""
    try:
        items = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MeterError(f"nft printed something that is not its JSON ruleset ({exc})") from None
    counts: dict[str, int] = {}
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                counts[str(rule["comment"])] = int(expr["counter"].get("packets", 0))
    return counts


class NftablesMeter:
    def __init__(self, nft: str = "nft") -> None:
        self.nft = nft
        self._installed: set[IPAddress] = set()

    async def _nft(self, *args: str, stdin: str | None = None) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nft,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 5.0)
        except (OSError, TimeoutError) as exc:
            raise MeterError(f"cannot run {self.nft}: {exc}") from None
        if proc.returncode != 0:
            raise MeterError(f"{self.nft} {' '.join(args)} failed: {err.decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    async def _install(self, addresses: set[IPAddress]) -> None:
        await self._nft("-f", "-", stdin=nft_ruleset(addresses))
        self._installed = set(addresses)
        log.info("counting packets to %s in nftables table inet %s", ", ".join(map(str, addresses)), TABLE)

    async def read(self, addresses: Sequence[IPAddress]) -> int:
        wanted = set(addresses)
        if not wanted <= self._installed:
            await self._install(self._installed | wanted)
        try:
            counts = parse_counters(await self._nft("-j", "list", "table", "inet", TABLE))
        except MeterError:
            await self._install(self._installed)  # someone flushed the ruleset: once more
            counts = parse_counters(await self._nft("-j", "list", "table", "inet", TABLE))
        missing = [str(a) for a in wanted if str(a) not in counts]
        if missing:
            raise MeterError(f"no counter for {', '.join(missing)} in table inet {TABLE}")
        return sum(counts[str(a)] for a in wanted)

    async def close(self) -> None:
        if self._installed:
            try:
                await self._nft("delete", "table", "inet", TABLE)
            except MeterError as exc:
                log.warning("could not remove nftables table inet %s: %s", TABLE, exc)
            self._installed = set()


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
