"""The prober both daemons use: each check goes to the probe of its kind and transport.

``Probers`` is the real implementation of the ``Prober`` protocol (anycastd.checks.dns): DNS over UDP and
TCP (anycastd.checks.dns), over TLS and HTTPS (anycastd.checks.encrypted), zones (anycastd.checks.zone) and
the operator's commands (anycastd.checks.command). Tests give the daemons an in-memory prober instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from anycastd.checks.command import CommandProber
from anycastd.checks.dns import DnsProber, ProbeResult, combine, targets_of
from anycastd.checks.encrypted import EncryptedProber
from anycastd.checks.zone import ZoneProber
from anycastd.config.checks import Check
from anycastd.core.net import IPAddress


class Probers:
    def __init__(self) -> None:
        self.dns = DnsProber()
        self.encrypted = EncryptedProber()
        self.zone = ZoneProber()
        self.command = CommandProber()

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        return combine(await self.probe_each(check, targets_of(check, service_addresses)))

    async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
        if check.kind == "zone":
            return [await self.zone.probe(check)]
        if check.kind == "command":
            return [await self.command.probe(check)]
        if not check.encrypted:
            return await self.dns.probe_each(check, targets)
        query = self.dns.compiled(check).query
        return list(await asyncio.gather(*(self.encrypted.query(check, query, a) for a in targets)))

    async def aclose(self) -> None:
        self.dns.close()
        await self.encrypted.aclose()
