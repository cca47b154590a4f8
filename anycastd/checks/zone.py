"""Zone probes (``kind: zone``): the server serves each zone, and its copy keeps up with the primary's.

Each probe asks the server (the check's address) and, given one, the primary for the SOA of every zone,
all at once. A zone fails when the server does not answer authoritatively for it with its SOA (not loaded,
or expired: a secondary that lost its primary long enough stops serving the zone), or when its serial has
been behind the primary's for longer than ``max_lag`` (anycastd.core.serials decides). The primary is
asked over the admin network; a primary that does not answer is no failure of the server's.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
from dns.rdtypes.ANY.SOA import SOA

from anycastd.checks.dns import UDP_SENDS, ProbeResult, os_failure, timed_out
from anycastd.config.checks import Check
from anycastd.core.health import Outcome
from anycastd.core.net import IPAddress
from anycastd.core.serials import Freshness


def soa_serial(zone: str, response: dns.message.Message) -> int | str:
    """The zone's serial from an authoritative answer, or why there is none."""
    rcode = dns.rcode.to_text(response.rcode())
    if rcode != "NOERROR":
        return f"{zone} answered {rcode}: the zone is not loaded"
    if not response.flags & dns.flags.AA:
        return f"{zone} answered without authority (AA): the zone is not loaded"
    name = dns.name.from_text(zone)
    for rrset in response.answer:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.SOA:
            for rdata in rrset:
                if isinstance(rdata, SOA):
                    return int(rdata.serial)
    return f"{zone} answered without its SOA: the zone is not loaded"


async def ask_soa(zone: str, address: IPAddress, port: int, timeout: float) -> dns.message.Message:
    """The server's answer to an authoritative SOA question, over a *connected* UDP socket: nothing
    listening is refused at once (ICMP port unreachable), as in every DNS check. The question is sent up
    to UDP_SENDS times within the timeout (a late answer to an earlier send is as good), so one lost
    packet does not fail the probe."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    backend: Any = dns.asyncbackend.get_backend("asyncio")
    where = (str(address), port)
    sock = await backend.make_socket(dns.inet.af_for_address(where[0]), socket.SOCK_DGRAM, 0, None, where)
    async with sock:
        for _ in range(UDP_SENDS - 1):
            try:
                return await dns.asyncquery.udp(query, where[0], timeout / UDP_SENDS, port, sock=sock)
            except dns.exception.Timeout:
                continue
        return await dns.asyncquery.udp(query, where[0], timeout / UDP_SENDS, port, sock=sock)


class ZoneProber:
    """Zone probes, with each check's freshness kept between probes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: By what a check asks (not its timeout: a confirming probe, with a shorter one, is the same clock).
        self._freshness: dict[tuple[object, ...], Freshness] = {}

    async def probe(self, check: Check) -> ProbeResult:
        target = str(check.address)
        started = time.monotonic()
        local = asyncio.gather(*(self._local(check, zone) for zone in check.zones))
        primary = asyncio.gather(*(self._primary(check, zone) for zone in check.zones))
        serials, primaries = await asyncio.gather(local, primary)
        latency = time.monotonic() - started
        failures = [s for s in serials if isinstance(s, ProbeResult)]
        if failures:
            worst = next((f for f in failures if f.outcome is Outcome.HARD_FAIL), failures[0])
            return ProbeResult(worst.outcome, "; ".join(f.reason for f in failures), None, target, worst.kind)
        key = (check.address, check.port, check.zones, check.primary, check.primary_port)
        freshness = self._freshness.setdefault(key, Freshness())
        now = self.clock()
        verdicts = []
        for zone, serial, primary_serial in zip(check.zones, serials, primaries, strict=True):
            assert isinstance(serial, int)
            if check.primary is None:
                verdicts.append((True, f"{zone} serial {serial}"))
                continue
            v = freshness.observe(zone, serial, primary_serial, now, check.max_lag)
            verdicts.append((v.fresh, v.reason))
        stale = [reason for fresh, reason in verdicts if not fresh]
        if stale:
            return ProbeResult(Outcome.FAIL, f"{target}: " + "; ".join(stale), latency, target, "stale")
        return ProbeResult(Outcome.OK, f"{target}: " + "; ".join(r for _, r in verdicts), latency, target)

    async def _local(self, check: Check, zone: str) -> int | ProbeResult:
        target = str(check.address)
        try:
            response = await ask_soa(zone, check.address, check.port, check.timeout)
        except dns.exception.Timeout:
            return timed_out(target, check.timeout)
        except OSError as exc:
            return os_failure(exc, target)
        except dns.exception.DNSException as exc:
            return ProbeResult(Outcome.FAIL, f"{target}: malformed response ({exc})", None, target, "malformed")
        serial = soa_serial(zone, response)
        if isinstance(serial, str):
            return ProbeResult(Outcome.FAIL, f"{target}: {serial}", None, target, "zone")
        return serial

    @staticmethod
    async def _primary(check: Check, zone: str) -> int | None:
        if check.primary is None:
            return None
        try:
            response = await ask_soa(zone, check.primary, check.primary_port, check.timeout)
        except (dns.exception.DNSException, OSError):
            return None
        serial = soa_serial(zone, response)
        return serial if isinstance(serial, int) else None
