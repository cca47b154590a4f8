"""Counting the packets that still reach the service addresses, with an nftables table of anycastd's own.

The table is ``inet anycastd``: one counter rule per service address on the
input hook, for packets that did not come from this host itself (anycastd's
own probes of the service address arrive on ``lo`` and must not keep the node
"busy"). ``NftablesMeter`` is the ``TrafficMeter`` anycastd.watch.drain waits on;
the ruleset is written from typed addresses only (anycastd.core.syntax.nft_word).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from anycastd.core.net import IPAddress
from anycastd.core.syntax import nft_word
from anycastd.untrusted import loads
from anycastd.watch.drain import MeterError

log = logging.getLogger(__name__)

TABLE = "anycastd"


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
        items = loads(text)["nftables"]
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
