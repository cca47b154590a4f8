"""DNS probes: ask the resolver a question, return a verdict as a value.

Theory of operation
-------------------
A probe of one check queries the resolver's admin address and, unless told
not to, every service address of the service, concurrently. It passes only if
every answer passes: a resolver that forgot to listen on the service address
must not be announced. (Which service addresses a round gives it is the
schedule's: a steady round gives a slice, anycastd.core.sweep.)

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
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from anycastd.config.checks import Check
from anycastd.core.health import Outcome, Result
from anycastd.core.net import IPAddress

UDP_SENDS = 3


#: Every ``ProbeResult.kind`` of a failure (metrics create each at zero, so alerts on them hold from the start).
FAILURE_KINDS = (
    "timeout", "refused", "network", "malformed", "mismatch", "rcode", "answer", "dnssec",  # every DNS check
    "tls", "http",  # DoT and DoH: the handshake or the certificate; an HTTP status other than 2xx
    "zone", "stale",  # zone checks: not loaded; behind the primary for longer than max_lag
    "exit", "output", "missing",  # command checks: a non-zero exit or a signal; too much output; no program
)  # fmt: skip

#: The AD (authentic data) bit of a header's flags word (RFC 4035): a validating resolver sets it on an answer it
#: validated, when the query set AD or DO (RFC 6840 5.7).
AD = 0x0020


@dataclass(frozen=True)
class ProbeResult:
    """The verdict on one query, or the combined verdict of a probe."""

    outcome: Outcome
    reason: str
    latency: float | None  # seconds until the answer, None when there was none
    target: str
    #: A short, fixed word for the kind of failure (metrics label): ok, or one of FAILURE_KINDS.
    kind: str = "ok"
    #: A passing probe that says the server struggles: a command's degraded exit code (anycastd.core.degradation).
    degraded: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def for_health(self) -> Result:
        return Result(self.outcome, self.reason)


class Prober(Protocol):
    """Runs one probe of a check; the sidecar and the router get one through their constructor."""

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult: ...


class SharedProber(Prober, Protocol):
    """A prober that can also ask each address on its own: one round of a check that several services share
    (anycastd.daemons.skeleton.SharedProbe) asks each address once and judges each service by its own."""

    async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
        """One result per target, in order (for a zone or command check: one, whatever ``targets`` holds)."""
        ...


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def classify(check: Check, query: dns.message.Message, wire: bytes, target: str, latency: float) -> ProbeResult:
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
    if check.dnssec and not response.flags & AD:
        return ProbeResult(
            Outcome.FAIL,
            f"{target}: {rcode} without the AD bit: the answer was not validated (DNSSEC)",
            latency,
            target,
            "dnssec",
        )
    return ProbeResult(Outcome.OK, f"{target}: {rcode} in {_ms(latency)}", latency, target)


class _Channel(asyncio.DatagramProtocol):
    """One connected UDP socket to one resolver address, shared by every probe of it.

    Responses are handed to the waiting probe by message id; anything else is
    ignored. An ICMP port unreachable arrives as ``error_received`` without
    saying which query caused it, so it fails every probe waiting on this
    socket: they all asked the same address, which has nothing listening.
    """

    def __init__(self) -> None:
        #: What to call with the answer to each query in flight (or the error that ends it), by message id.
        self.pending: dict[int, Callable[[bytes | Exception], None]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) >= 2:
            deliver = self.pending.get(int.from_bytes(data[:2], "big"))
            if deliver is not None:
                deliver(data)

    def error_received(self, exc: Exception) -> None:
        for deliver in list(self.pending.values()):
            deliver(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error_received(exc or ConnectionResetError("socket closed"))


@dataclass(frozen=True)
class Compiled:
    """What a check sends and expects, prepared once: probing then costs no dnspython work when all is well."""

    query: dns.message.Message  # for the slow path (classify), which explains a failure
    tail: bytes  # the query's wire form after its 2-byte id
    question: bytes  # the question section as sent (name, type, class)
    rcode: int
    rdtype: int
    rdata: bytes | None  # the expected answer's wire form, when it can be compared byte for byte
    ad: bool = False  # the answer must carry the AD bit (``dnssec``)


#: Record types whose wire form holds no domain name, so no compression: byte comparison is exact.
_FLAT_TYPES = frozenset({dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT})


def compile_check(check: Check) -> Compiled:
    query = dns.message.make_query(check.qname, check.qtype)
    if check.dnssec:  # ask for validation: AD in the query (RFC 6840 5.7); no DO, so no signatures to carry
        query.flags |= AD
    query.id = 0
    wire = query.to_wire()
    rdtype = dns.rdatatype.from_text(check.qtype)
    rdata = None
    if check.answer is not None and rdtype in _FLAT_TYPES:
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, check.answer).to_wire()
        except dns.exception.DNSException:
            rdata = None  # the slow path compares text
    return Compiled(query, wire[2:], wire[12:], dns.rcode.from_text(check.rcode), rdtype, rdata, check.dnssec)


def _skip_name(wire: bytes, at: int) -> int:
    while True:
        length = wire[at]
        if length & 0xC0 == 0xC0:
            return at + 2
        if length & 0xC0:
            raise ValueError("bad label")
        at += 1 + length
        if length == 0:
            return at


def fast_accept(c: Compiled, query_id: int, wire: bytes, want_answer: bool) -> bool:
    """True only for a well-formed response that passes: the id, QR, opcode, rcode and question match,
    the expected answer is present, and the sections add up to the length. False means "ask classify",
    never "failed": the slow path decides and explains."""
    try:
        if len(wire) < 12 or int.from_bytes(wire[:2], "big") != query_id:
            return False
        flags, qd, an, ns, ar = struct.unpack_from("!HHHHH", wire, 2)
        if flags & 0xFA00 != 0x8000 or flags & 0x000F != c.rcode or c.rcode > 15 or qd != 1:
            return False  # not QR, or an opcode, TC or rcode other than expected
        if c.ad and not flags & AD:
            return False  # not validated
        at = 12 + len(c.question)
        if wire[12:at] != c.question:
            return False
        found = not want_answer
        for index in range(an + ns + ar):
            at = _skip_name(wire, at)
            rdtype, _, _, rdlen = struct.unpack_from("!HHIH", wire, at)
            at += 10
            if index < an and rdtype == c.rdtype and wire[at : at + rdlen] == c.rdata:
                found = True
            at += rdlen
        return found and at == len(wire)
    except (IndexError, ValueError, struct.error):
        return False


def refused(target: str) -> ProbeResult:
    """Nothing listens on the resolver's port: a hard failure."""
    return ProbeResult(Outcome.HARD_FAIL, f"{target}: connection refused", None, target, "refused")


def timed_out(target: str, timeout: float) -> ProbeResult:
    return ProbeResult(Outcome.FAIL, f"{target}: timeout after {_ms(timeout)}", None, target, "timeout")


def judge(check: Check, c: Compiled, query_id: int, wire: bytes, *, target: str, latency: float) -> ProbeResult:
    """The verdict on an answer to the UDP query ``query_id``: the fast path if it passes, else classify."""
    if fast_accept(c, query_id, wire, check.answer is not None):
        return ProbeResult(Outcome.OK, f"{target}: {check.rcode} in {_ms(latency)}", latency, target)
    c.query.id = query_id
    return classify(check, c.query, wire, target, latency)


def os_failure(exc: OSError, target: str) -> ProbeResult:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return refused(target)
    reason = exc.strerror or str(exc)
    return ProbeResult(Outcome.FAIL, f"{target}: {reason.lower()}", None, target, "network")


async def query_udp_many(asked: Sequence[tuple[IPAddress, _Channel]], check: Check, c: Compiled) -> list[ProbeResult]:
    """One query to each address over its channel, all at once, each sent up to UDP_SENDS times within the
    timeout; one verdict per address, in order.

    A round of a hundred addresses costs one future and one timer at a time (a resend to those that have not
    answered, then the expiry), not a task, a future and a timer per address: most answers come before the
    first resend is due."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    answers: dict[int, tuple[bytes | Exception, float]] = {}  # by position: what came, and when
    queries: list[tuple[_Channel, int, bytes]] = []

    def deliverer(position: int) -> Callable[[bytes | Exception], None]:
        def deliver(item: bytes | Exception) -> None:
            if position not in answers:
                answers[position] = (item, loop.time())
                if len(answers) == len(queries) and not done.done():
                    done.set_result(None)

        return deliver

    for position, (_, channel) in enumerate(asked):
        query_id = secrets.randbits(16)
        while query_id in channel.pending:
            query_id = secrets.randbits(16)
        channel.pending[query_id] = deliverer(position)
        queries.append((channel, query_id, query_id.to_bytes(2, "big") + c.tail))

    gap = check.timeout / UDP_SENDS
    sends = 0
    timer: asyncio.TimerHandle | None = None

    def send() -> None:
        nonlocal sends, timer
        if done.done():
            return
        if sends == UDP_SENDS:
            done.set_result(None)  # the rest had no answer
            return
        for position, (channel, _, wire) in enumerate(queries):
            if position not in answers and not channel.closed and channel.transport is not None:
                channel.transport.sendto(wire)
        sends += 1
        timer = loop.call_at(started + gap * sends, send)

    started = loop.time()  # time.monotonic, as the rest of anycastd uses
    send()
    try:
        await done
    finally:
        if timer is not None:
            timer.cancel()
        for channel, query_id, _ in queries:
            channel.pending.pop(query_id, None)
    out = []
    for position, (address, _) in enumerate(asked):
        target = str(address)
        if position not in answers:
            out.append(timed_out(target, check.timeout))
            continue
        item, at = answers[position]
        if isinstance(item, OSError):
            out.append(os_failure(item, target))
        elif isinstance(item, Exception):
            out.append(os_failure(OSError(str(item)), target))
        else:
            out.append(judge(check, c, queries[position][1], item, target=target, latency=at - started))
    return out


async def query_tcp(check: Check, query: dns.message.Message, address: IPAddress) -> ProbeResult:
    import dns.asyncquery  # noqa: PLC0415 (it brings dnspython's HTTP/2 stack: imported where TCP is probed)

    target = str(address)
    started = time.monotonic()
    try:
        response = await dns.asyncquery.tcp(query, str(address), timeout=check.timeout, port=check.port)
    except dns.exception.Timeout:
        return timed_out(target, check.timeout)
    except OSError as exc:
        return os_failure(exc, target)
    except (dns.exception.DNSException, EOFError) as exc:
        return ProbeResult(Outcome.FAIL, f"{target}: malformed response ({exc})", None, target, "malformed")
    return classify(check, query, response.to_wire(), target, time.monotonic() - started)


def combine(results: Sequence[ProbeResult]) -> ProbeResult:
    """One verdict for a probe: the worst result wins; a pass reports the slowest answer."""
    if len(results) == 1:
        return results[0]
    hard = [r for r in results if r.outcome is Outcome.HARD_FAIL]
    failed = hard or [r for r in results if r.outcome is Outcome.FAIL]
    if failed:
        first = failed[0]
        reason = "; ".join(r.reason for r in failed)
        return ProbeResult(first.outcome, reason, first.latency, first.target, first.kind)
    slowest = max(results, key=lambda r: r.latency or 0.0)
    return slowest


def targets_of(check: Check, service_addresses: Sequence[IPAddress]) -> list[IPAddress]:
    """The addresses a probe of ``check`` asks: its own, then the service's unless told not to."""
    targets = [check.address]
    if check.probe_service_addresses and check.kind == "dns":  # a zone's or a command's probe asks one thing
        targets += [a for a in service_addresses if a != check.address]
    return targets


class DnsProber:
    """DNS over UDP and TCP: dnspython over the network, one long-lived UDP socket per resolver address."""

    def __init__(self) -> None:
        self._compiled: dict[Check, Compiled] = {}
        self._channels: dict[tuple[IPAddress, int], _Channel] = {}

    async def _channel(self, address: IPAddress, port: int) -> _Channel:
        _, channel = await asyncio.get_running_loop().create_datagram_endpoint(
            _Channel, remote_addr=(str(address), port)
        )
        other = self._channels.get((address, port))
        if other is not None and not other.closed and other.transport is not None:
            assert channel.transport is not None
            channel.transport.close()  # another probe of this address made one meanwhile: one socket, not two
            return other
        self._channels[(address, port)] = channel
        return channel

    def compiled(self, check: Check) -> Compiled:
        c = self._compiled.get(check)
        if c is None:
            c = self._compiled[check] = compile_check(check)
        return c

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        return combine(await self.probe_each(check, targets_of(check, service_addresses)))

    async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
        c = self.compiled(check)
        if check.transport == "tcp":
            return list(await asyncio.gather(*(query_tcp(check, c.query, a) for a in targets)))
        asked: list[tuple[IPAddress, _Channel]] = []
        failed: dict[int, ProbeResult] = {}
        for position, address in enumerate(targets):
            channel = self._channels.get((address, check.port))
            if channel is None or channel.closed:
                try:
                    channel = await self._channel(address, check.port)
                except OSError as exc:
                    failed[position] = os_failure(exc, str(address))
                    continue
            asked.append((address, channel))
        answered = iter(await query_udp_many(asked, check, c)) if asked else iter(())
        return [failed[p] if p in failed else next(answered) for p in range(len(targets))]

    def close(self) -> None:
        for channel in self._channels.values():
            if channel.transport is not None:
                channel.transport.close()
        self._channels.clear()
