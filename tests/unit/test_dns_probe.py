"""Probe classification against a tiny real DNS responder on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.rrset
import pytest

from anycastd.checks.dns import DnsProber, ProbeResult, classify, combine, compile_check, fast_accept, os_failure
from anycastd.config.checks import Check
from anycastd.core.health import Outcome
from anycastd.core.net import IPAddress
from tests.unit.responder import Responder, serve

LOCAL = ipaddress.ip_address("127.0.0.1")


def check(port: int, **kw: object) -> Check:
    base: dict[str, object] = {
        "address": LOCAL,
        "port": port,
        "qname": "health.example.",
        "qtype": "TXT",
        "answer": "healthy",
        "timeout": 0.3,
        "interval": 1.0,
    }
    return Check(**{**base, **kw})  # type: ignore[arg-type]


async def probe_once(c: Check, service_addresses: Sequence[IPAddress] = ()) -> ProbeResult:
    """One probe with a prober of its own, whose sockets are closed afterwards."""
    prober = DnsProber()
    try:
        return await prober.probe(c, service_addresses)
    finally:
        prober.close()


async def probe(mode: str, **kw: object) -> ProbeResult:
    async with serve(Responder(mode=mode)) as r:
        return await probe_once(check(r.port, **kw))


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("mode", "outcome", "reason"),
    [
        ("ok", Outcome.OK, "127.0.0.1: NOERROR in"),
        ("servfail", Outcome.FAIL, "127.0.0.1: rcode SERVFAIL, expected NOERROR"),
        ("wrong-answer", Outcome.FAIL, '127.0.0.1: answer "something-else" does not match healthy'),
        ("garbage", Outcome.FAIL, "127.0.0.1: malformed response"),
        ("silent", Outcome.FAIL, "127.0.0.1: timeout after 300 ms"),
    ],
)
def test_classification(protocol: str, mode: str, outcome: Outcome, reason: str) -> None:
    result = asyncio.run(probe(mode, transport=protocol))
    assert result.outcome is outcome
    assert result.reason.startswith(reason), result.reason
    if outcome is Outcome.OK:
        assert result.latency is not None


def test_udp_ignores_a_response_with_another_id() -> None:
    result = asyncio.run(probe("wrong-id"))
    assert result.reason == "127.0.0.1: timeout after 300 ms"


def test_udp_resends_within_the_timeout_so_one_lost_packet_does_not_fail() -> None:
    async def go() -> tuple[ProbeResult, int]:
        async with serve(Responder(mode="drop-first")) as r:
            result = await probe_once(check(r.port))
            return result, r.queries

    result, queries = asyncio.run(go())
    assert result.ok, result.reason
    assert queries == 2


def test_expected_rcode_and_no_answer_check() -> None:
    result = asyncio.run(probe("servfail", rcode="SERVFAIL", answer=None))
    assert result.ok


def test_answer_of_another_type_does_not_match() -> None:
    result = asyncio.run(probe("ok", qtype="A", answer="192.0.2.1"))
    assert result.outcome is Outcome.FAIL


def closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_dead_resolver_is_a_hard_failure_at_once(protocol: str) -> None:
    result = asyncio.run(probe_once(check(closed_port(), transport=protocol, timeout=5.0, interval=10.0)))
    # The refusal ended the probe (a 5 s timeout would say "timeout after 5000 ms").
    assert result.outcome is Outcome.HARD_FAIL
    assert result.reason == "127.0.0.1: connection refused"


def test_service_address_that_nobody_answers_fails_the_probe() -> None:
    async def go() -> ProbeResult:
        async with serve(Responder()) as r:
            other = ipaddress.ip_address("127.0.0.2")  # nothing listens on this port there
            return await probe_once(check(r.port), [other])

    result = asyncio.run(go())
    assert result.outcome is Outcome.HARD_FAIL
    assert result.reason == "127.0.0.2: connection refused"


def test_probe_each_judges_every_address_on_its_own() -> None:
    """A shared round (anycastd.daemons.skeleton.SharedProbe) asks each address once and keeps each verdict."""

    async def go() -> list[ProbeResult]:
        async with serve(Responder()) as r:
            prober = DnsProber()
            try:
                targets = [LOCAL, ipaddress.ip_address("127.0.0.2"), LOCAL]
                return await prober.probe_each(check(r.port), targets)
            finally:
                prober.close()

    first, nobody, again = asyncio.run(go())
    assert first.ok and again.ok and first.target == "127.0.0.1"
    assert nobody.outcome is Outcome.HARD_FAIL and nobody.reason == "127.0.0.2: connection refused"


def test_service_addresses_can_be_left_out() -> None:
    async def go() -> ProbeResult:
        async with serve(Responder()) as r:
            return await probe_once(check(r.port, probe_service_addresses=False), [ipaddress.ip_address("127.0.0.2")])

    assert asyncio.run(go()).ok


@pytest.mark.parametrize(
    ("error", "outcome", "reason"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Outcome.HARD_FAIL, "a: connection refused"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), Outcome.HARD_FAIL, "a: connection refused"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), Outcome.FAIL, "a: network is unreachable"),
        (OSError("weird"), Outcome.FAIL, "a: weird"),
    ],
)
def test_os_errors_become_results(error: OSError, outcome: Outcome, reason: str) -> None:
    result = os_failure(error, "a")
    assert (result.outcome, result.reason) == (outcome, reason)


def test_combine_worst_wins_and_pass_reports_slowest() -> None:
    ok1 = ProbeResult(Outcome.OK, "a: NOERROR in 1 ms", 0.001, "a")
    ok2 = ProbeResult(Outcome.OK, "b: NOERROR in 5 ms", 0.005, "b")
    soft = ProbeResult(Outcome.FAIL, "c: timeout after 150 ms", None, "c")
    hard = ProbeResult(Outcome.HARD_FAIL, "d: connection refused", None, "d")
    assert combine([ok1, ok2]) is ok2
    assert combine([ok1, soft]).reason == "c: timeout after 150 ms"
    both = combine([soft, hard, ok1])
    assert both.outcome is Outcome.HARD_FAIL and both.reason == "d: connection refused"


def _response(c: Check, query_id: int, edit: str) -> bytes:
    """A response to the check's query, spoiled as ``edit`` says."""
    query = dns.message.make_query(c.qname, c.qtype)
    query.id = query_id
    response = dns.message.make_response(query)
    if edit != "no answer":
        rdtype = "A" if edit == "other type" else c.qtype
        text = "192.0.2.1" if edit == "other type" else ('"sick"' if edit == "other answer" else '"healthy"')
        response.answer.append(dns.rrset.from_text(c.qname, 0, "IN", rdtype, text))
    if edit == "servfail":
        response.set_rcode(dns.rcode.SERVFAIL)
    wire = bytearray(response.to_wire())
    if edit == "wrong id":
        wire[0] ^= 0xFF
    if edit == "not a response":
        wire[2] &= 0x7F
    if edit == "truncated flag":
        wire[2] |= 0x02
    if edit == "other question":
        wire[13] ^= 0x20 if wire[13] < 0x60 else 0x01
    if edit == "trailing junk":
        wire += b"\x00\x01"
    if edit == "cut short":
        del wire[-3:]
    return bytes(wire)


# edit -> does the fast path accept it? (everything it refuses goes to classify, which explains)
FAST = [
    ("proper", True),
    ("no answer", False),
    ("other type", False),
    ("other answer", False),
    ("servfail", False),
    ("wrong id", False),
    ("not a response", False),
    ("truncated flag", False),
    ("other question", False),
    ("trailing junk", False),
    ("cut short", False),
]


@pytest.mark.parametrize(("edit", "accepted"), FAST, ids=[f[0] for f in FAST])
def test_the_fast_path_accepts_only_what_classify_passes(edit: str, accepted: bool) -> None:
    c = check(53)
    compiled = compile_check(c)
    wire = _response(c, 4242, edit)
    assert fast_accept(compiled, 4242, wire, want_answer=True) is accepted
    compiled.query.id = 4242
    if accepted:  # the fast path never passes what the slow one fails
        assert classify(c, compiled.query, wire, "192.0.2.10", 0.001).ok


def test_the_fast_path_needs_no_answer_when_none_is_asked_for() -> None:
    c = check(53, answer=None)
    wire = _response(c, 7, "no answer")
    assert fast_accept(compile_check(c), 7, wire, want_answer=False)


def test_answers_of_types_with_names_go_to_the_slow_path() -> None:
    c = check(53, qtype="NS", answer="ns1.example.")
    assert compile_check(c).rdata is None  # compression makes byte comparison wrong: classify compares text


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize(("validated", "outcome"), [(True, Outcome.OK), (False, Outcome.FAIL)])
def test_a_dnssec_check_asks_for_validation_and_needs_the_ad_bit(
    protocol: str, validated: bool, outcome: Outcome
) -> None:
    async def go() -> tuple[ProbeResult, int]:
        async with serve(Responder(validated=validated)) as r:
            return await probe_once(check(r.port, transport=protocol, dnssec=True)), r.asked_ad

    result, asked = asyncio.run(go())
    assert asked >= 1  # the query set AD
    assert result.outcome is outcome
    if not validated:
        assert result.kind == "dnssec"
        assert result.reason == "127.0.0.1: NOERROR without the AD bit: the answer was not validated (DNSSEC)"


def test_a_check_without_dnssec_neither_asks_nor_minds_the_ad_bit() -> None:
    async def go() -> tuple[ProbeResult, int]:
        async with serve(Responder()) as r:
            return await probe_once(check(r.port)), r.asked_ad

    result, asked = asyncio.run(go())
    assert (result.outcome, asked) == (Outcome.OK, 0)


def test_the_fast_path_passes_a_dnssec_answer_only_with_the_ad_bit() -> None:
    c = check(53, dnssec=True)
    compiled = compile_check(c)
    query = dns.message.from_wire(compiled.query.to_wire())
    query.id = 7
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("health.example.", 0, "IN", "TXT", '"healthy"'))
    assert not fast_accept(compiled, 7, response.to_wire(), True)
    response.flags |= 0x0020
    assert fast_accept(compiled, 7, response.to_wire(), True)
    assert fast_accept(compile_check(check(53)), 7, response.to_wire(), True)  # AD is fine when not asked for
