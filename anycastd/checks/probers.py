"""The prober both daemons use: each check goes to the probe of its kind and transport.

``Probers`` is the real implementation of the ``Prober`` protocol (anycastd.checks.dns): DNS over UDP and
TCP (anycastd.checks.dns), over TLS and HTTPS (anycastd.checks.encrypted), zones (anycastd.checks.zone) and
the operator's commands (anycastd.checks.command). Tests give the daemons an in-memory prober instead.

The probes of TLS, HTTPS and zones are imported when a check first needs one: their modules bring
dnspython's query functions and its HTTP/2 stack, which cost a sidecar or router about 0.1 s of CPU at
every start (bench/startup.py), and most configurations probe DNS over UDP alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from anycastd.checks.command import CommandProber
from anycastd.checks.dns import DnsProber, ProbeResult, combine, targets_of
from anycastd.config.checks import Check
from anycastd.core.net import IPAddress

if TYPE_CHECKING:
    from anycastd.checks.encrypted import EncryptedProber
    from anycastd.checks.zone import ZoneProber


class Probers:
    def __init__(self) -> None:
        self.dns = DnsProber()
        self.command = CommandProber()
        self._encrypted: EncryptedProber | None = None
        self._zone: ZoneProber | None = None

    @property
    def encrypted(self) -> EncryptedProber:
        if self._encrypted is None:
            from anycastd.checks.encrypted import EncryptedProber  # noqa: PLC0415 (see the module's docstring)

            self._encrypted = EncryptedProber()
        return self._encrypted

    @property
    def zone(self) -> ZoneProber:
        if self._zone is None:
            from anycastd.checks.zone import ZoneProber  # noqa: PLC0415 (see the module's docstring)

            self._zone = ZoneProber()
        return self._zone

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
        if self._encrypted is not None:
            await self._encrypted.aclose()
