"""DNS probes: ask the resolver a question, return a verdict as a value.

Theory of operation
-------------------
A probe of one check queries the resolver's admin address and, unless told
not to, every service address of the service, concurrently. It passes only if
every answer passes: a resolver that forgot to listen on the service address
must not be announced.

UDP queries go through a *connected* socket: the kernel then reports an ICMP
port unreachable as ECONNREFUSED, so a dead resolver fails in microseconds
(a hard failure) instead of after the timeout. Within the timeout the query is
sent up to three times, so one lost packet does not fail a probe; the same
message id is kept, and anything that is not a response to it is ignored.
dnspython builds and parses the messages; TCP uses dnspython's own asyncio
query.

Nothing here raises for a failing resolver: every failure is a
``ProbeResult`` with a reason a person can read.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from anycastd.config import DnsCheck, IPAddress
from anycastd.health import Outcome, Result

UDP_SENDS = 3


@dataclass(frozen=True)
class ProbeResult:
    """The verdict on one query, or the combined verdict of a probe."""

    outcome: Outcome
    reason: str
    latency: float | None  # seconds until the answer, None when there was none
    target: str
    #: A short, fixed word for the kind of failure (metrics label): ok, timeout, refused,
    #: network, malformed, mismatch, rcode, answer.
    kind: str = "ok"

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def for_health(self) -> Result:
        return Result(self.outcome, self.reason)


class Prober(Protocol):
    """Runs one probe of a check; the sidecar and the router get one through their constructor."""

    async def probe(self, check: DnsCheck, service_addresses: Sequence[IPAddress]) -> ProbeResult: ...


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def classify(check: DnsCheck, query: dns.message.Message, wire: bytes, target: str, latency: float) -> ProbeResult:
    """Judge a response against what the check expects."""
    try:
        response = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:
        return ProbeResult(Outcome.FAIL, f"{target}: malformed response ({exc})", latency, target, "malformed")
    if not query.is_response(response):
        return ProbeResult(
            Outcome.FAIL, f"{target}: the response does not answer the query", latency, target, "mismatch"
        )
    rcode = dns.rcode.to_text(response.rcode())
    if rcode != check.rcode:
        return ProbeResult(Outcome.FAIL, f"{target}: rcode {rcode}, expected {check.rcode}", latency, target, "rcode")
    if check.answer is not None:
        rdtype = dns.rdatatype.from_text(check.qtype)
        seen: list[str] = []
        for rrset in response.answer:
            if rrset.rdtype != rdtype:
                continue
            for rdata in rrset:
                text = rdata.to_text()
                seen.append(text)
                if check.answer in (text, text.strip('"')):
                    break
            else:
                continue
            break
        else:
            got = ", ".join(seen) if seen else f"no {check.qtype} record"
            return ProbeResult(
                Outcome.FAIL, f"{target}: answer {got} does not match {check.answer}", latency, target, "answer"
            )
    return ProbeResult(Outcome.OK, f"{target}: {rcode} in {_ms(latency)}", latency, target)


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        # A stray datagram with another id is not our answer; keep waiting.
        if len(data) >= 2 and int.from_bytes(data[:2], "big") == self.query_id and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


def _os_failure(exc: OSError, target: str) -> ProbeResult:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return ProbeResult(Outcome.HARD_FAIL, f"{target}: connection refused", None, target, "refused")
    reason = exc.strerror or str(exc)
    return ProbeResult(Outcome.FAIL, f"{target}: {reason.lower()}", None, target, "network")


async def query_udp(check: DnsCheck, query: dns.message.Message, address: IPAddress) -> ProbeResult:
    target = str(address)
    wire = query.to_wire()
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Datagram(query.id), remote_addr=(str(address), check.port)
        )
    except OSError as exc:
        return _os_failure(exc, target)
    try:
        gap = check.timeout / UDP_SENDS
        for attempt in range(UDP_SENDS):
            transport.sendto(wire)
            remaining = check.timeout - (time.monotonic() - started)
            wait = remaining if attempt == UDP_SENDS - 1 else min(gap, remaining)
            if wait <= 0:
                break
            try:
                data = await asyncio.wait_for(asyncio.shield(protocol.answer), wait)
            except TimeoutError:
                continue
            except OSError as exc:
                return _os_failure(exc, target)
            return classify(check, query, data, target, time.monotonic() - started)
        return ProbeResult(Outcome.FAIL, f"{target}: timeout after {_ms(check.timeout)}", None, target, "timeout")
    finally:
        transport.close()
        if not protocol.answer.done():
            protocol.answer.cancel()
        elif not protocol.answer.cancelled():
            protocol.answer.exception()  # retrieved, so asyncio does not warn about it


async def query_tcp(check: DnsCheck, query: dns.message.Message, address: IPAddress) -> ProbeResult:
    target = str(address)
    started = time.monotonic()
    try:
        response = await dns.asyncquery.tcp(query, str(address), timeout=check.timeout, port=check.port)
    except dns.exception.Timeout:
        return ProbeResult(Outcome.FAIL, f"{target}: timeout after {_ms(check.timeout)}", None, target, "timeout")
    except OSError as exc:
        return _os_failure(exc, target)
    except (dns.exception.DNSException, EOFError) as exc:
        return ProbeResult(Outcome.FAIL, f"{target}: malformed response ({exc})", None, target, "malformed")
    return classify(check, query, response.to_wire(), target, time.monotonic() - started)


def combine(results: Sequence[ProbeResult]) -> ProbeResult:
    """One verdict for a probe: the worst result wins; a pass reports the slowest answer."""
    hard = [r for r in results if r.outcome is Outcome.HARD_FAIL]
    failed = hard or [r for r in results if r.outcome is Outcome.FAIL]
    if failed:
        first = failed[0]
        reason = "; ".join(r.reason for r in failed)
        return ProbeResult(first.outcome, reason, first.latency, first.target, first.kind)
    slowest = max(results, key=lambda r: r.latency or 0.0)
    return slowest


class DnsProber:
    """The real prober: dnspython over the network."""

    async def probe(self, check: DnsCheck, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        query = dns.message.make_query(check.qname, check.qtype)
        targets = [check.address]
        if check.probe_service_addresses:
            targets += [a for a in service_addresses if a != check.address]
        run = query_udp if check.protocol == "udp" else query_tcp
        results = await asyncio.gather(*(run(check, query, a) for a in targets))
        return combine(results)
