"""DoT and DoH probes against a tiny real TLS responder: they pass, keep their connection, and a kept connection
never hides a dead listener; certificates are checked as configured."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from anycastd.checks.dns import ProbeResult, compile_check
from anycastd.checks.encrypted import EncryptedProber
from anycastd.checks.probers import Probers
from anycastd.config.checks import Check, TlsSettings
from anycastd.core.health import Outcome
from tests.unit.responder import Responder, make_certificate, serve

LOCALHOST = ipaddress.ip_address("127.0.0.1")
T = TypeVar("T")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def check(r: Responder, transport: str, cert: Path | None, **kw: object) -> Check:
    port = r.tls_port if transport == "dot" else r.doh_port
    tls = TlsSettings(server_name="dns.test", ca_file=cert) if cert else TlsSettings(verify=False)
    values: dict[str, object] = {
        "port": port, "transport": transport, "qname": "health.example.", "qtype": "TXT", "answer": "healthy",
        "tls": tls, "timeout": 1.0, "interval": 2.0, "probe_service_addresses": False,
    }  # fmt: skip
    values.update(kw)
    return Check(LOCALHOST, **values)  # type: ignore[arg-type]


def with_responder(certificate: tuple[Path, Path], go: Callable[[Responder, Probers], Awaitable[T]], **kw: object) -> T:
    async def run() -> T:
        async with serve(Responder(**kw), certificate) as r:  # type: ignore[arg-type]
            probers = Probers()
            try:
                return await go(r, probers)
            finally:
                await probers.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_a_probe_passes_and_keeps_its_connection(certificate: tuple[Path, Path], transport: str) -> None:
    async def go(r: Responder, p: Probers) -> tuple[list[ProbeResult], int, int]:
        c = check(r, transport, certificate[0])
        results = [await p.probe(c, ()) for _ in range(5)]
        return results, r.connections, p.encrypted.connections_made

    results, accepted, made = with_responder(certificate, go)
    assert all(r.ok for r in results), results
    assert results[0].reason.startswith("127.0.0.1: NOERROR in ")
    assert accepted == made == 2  # two handshakes for five probes: the first probe's, and a spare's


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_reuse_0_makes_a_new_connection_every_probe(certificate: tuple[Path, Path], transport: str) -> None:
    async def go(r: Responder, p: Probers) -> tuple[bool, int]:
        c = check(r, transport, certificate[0], reuse=0.0)
        results = [await p.probe(c, ()) for _ in range(3)]
        return all(x.ok for x in results), r.connections

    assert with_responder(certificate, go) == (True, 3)


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_a_server_that_closed_the_kept_connection_costs_no_failure(
    certificate: tuple[Path, Path], transport: str
) -> None:
    async def go(r: Responder, p: Probers) -> tuple[bool, bool, int]:
        c = check(r, transport, certificate[0])
        first = await p.probe(c, ())
        r.hang_up()  # an idle timeout on the server's side
        await asyncio.sleep(0.05)
        second = await p.probe(c, ())
        return first.ok, second.ok, r.connections

    assert with_responder(certificate, go) == (True, True, 3)  # both kept ones closed: a third, at once


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_a_dead_listener_is_a_hard_failure_even_with_a_kept_connection(
    certificate: tuple[Path, Path], transport: str
) -> None:
    async def go(r: Responder, p: Probers) -> tuple[bool, ProbeResult]:
        c = check(r, transport, certificate[0])
        first = await p.probe(c, ())
        r.stop_listening()
        r.hang_up()  # the resolver died: its listener and its connections go together
        await asyncio.sleep(0.05)
        return first.ok, await p.probe(c, ())

    ok, after = with_responder(certificate, go)
    assert ok
    assert (after.outcome, after.kind, after.reason) == (Outcome.HARD_FAIL, "refused", "127.0.0.1: connection refused")


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_a_listener_gone_behind_a_live_connection_is_found_when_reuse_runs_out(
    certificate: tuple[Path, Path], transport: str
) -> None:
    async def go(r: Responder, p: Probers) -> tuple[bool, bool, ProbeResult]:
        c = check(r, transport, certificate[0], reuse=0.3)
        first = await p.probe(c, ())
        r.stop_listening()  # the old connection still answers
        still = await p.probe(c, ())
        await asyncio.sleep(0.35)
        return first.ok, still.ok, await p.probe(c, ())

    first, still, after = with_responder(certificate, go)
    assert first and still
    assert after.kind == "refused"


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_an_untrusted_certificate_fails_with_kind_tls(certificate: tuple[Path, Path], transport: str) -> None:
    async def go(r: Responder, p: Probers) -> ProbeResult:
        c = check(r, transport, None, tls=TlsSettings(server_name="dns.test"))  # the system's CAs: not ours
        return await p.probe(c, ())

    result = with_responder(certificate, go)
    assert (result.outcome, result.kind) == (Outcome.FAIL, "tls")
    assert "the certificate was not accepted (" in result.reason and "self-signed" in result.reason


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_a_certificate_for_another_name_fails(certificate: tuple[Path, Path], transport: str) -> None:
    async def go(r: Responder, p: Probers) -> ProbeResult:
        c = check(r, transport, None, tls=TlsSettings(server_name="other.test", ca_file=certificate[0]))
        return await p.probe(c, ())

    result = with_responder(certificate, go)
    assert result.kind == "tls" and "Hostname mismatch" in result.reason


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_the_address_itself_is_verified_without_a_server_name(certificate: tuple[Path, Path], transport: str) -> None:
    async def go(r: Responder, p: Probers) -> ProbeResult:
        return await p.probe(check(r, transport, None, tls=TlsSettings(ca_file=certificate[0])), ())

    assert with_responder(certificate, go).ok  # the certificate carries IP:127.0.0.1


@pytest.mark.parametrize(("transport", "mode", "kind"), [("dot", "servfail", "rcode"), ("doh", "servfail", "rcode"),
                                                         ("dot", "silent", "timeout"), ("doh", "silent", "timeout")])  # fmt: skip
def test_answers_are_judged_as_over_udp(certificate: tuple[Path, Path], transport: str, mode: str, kind: str) -> None:
    async def go(r: Responder, p: Probers) -> ProbeResult:
        return await p.probe(check(r, transport, certificate[0], timeout=0.3, interval=1.0), ())

    result = with_responder(certificate, go, mode=mode)
    assert (result.outcome, result.kind) == (Outcome.FAIL, kind)


def test_an_http_error_status_fails_with_kind_http(certificate: tuple[Path, Path]) -> None:
    async def go(r: Responder, p: Probers) -> ProbeResult:
        return await p.probe(check(r, "doh", certificate[0]), ())

    result = with_responder(certificate, go, doh_status=503)
    assert (result.kind, result.reason.split(":")[0]) == ("http", "127.0.0.1")
    assert "status code 503" in result.reason


def test_a_frozen_server_times_out_and_the_next_probe_takes_the_spare(certificate: tuple[Path, Path]) -> None:
    async def go(r: Responder, p: Probers) -> tuple[ProbeResult, ProbeResult, int]:
        c = check(r, "dot", certificate[0], timeout=0.3, interval=1.0)
        assert (await p.probe(c, ())).ok
        await asyncio.sleep(0.1)  # the spare is made
        r.mode = "silent"
        frozen = await p.probe(c, ())
        r.mode = "ok"
        return frozen, await p.probe(c, ()), r.connections

    frozen, thawed, connections = with_responder(certificate, go)
    assert frozen.kind == "timeout" and thawed.ok
    assert connections <= 3  # the timed-out one dropped; the thawed probe took the spare


@pytest.mark.parametrize("transport", ["dot", "doh"])
def test_spares_are_made_off_the_probes_path_and_renewed_before_reuse_runs_out(
    certificate: tuple[Path, Path], transport: str
) -> None:
    async def go(r: Responder, p: Probers) -> tuple[list[bool], int]:
        c = check(r, transport, certificate[0], reuse=0.4)
        oks = []
        for _ in range(12):  # 1.2 s: three times the reuse; every connection older than it is closed unused
            oks.append((await p.probe(c, ())).ok)
            await asyncio.sleep(0.1)
        return oks, r.connections

    oks, connections = with_responder(certificate, go)
    assert all(oks)
    assert 4 <= connections <= 8  # about one per reuse / 2, made in the background


def test_the_connections_of_a_check_no_longer_asked_are_closed_once_past_their_reuse(
    certificate: tuple[Path, Path],
) -> None:
    async def go(r: Responder, _: Probers) -> tuple[int, int, bool]:
        now = [0.0]
        prober = EncryptedProber(clock=lambda: now[0])
        removed, kept = check(r, "dot", certificate[0]), check(r, "doh", certificate[0])
        query = compile_check(removed).query
        assert (await prober.query(removed, query, LOCALHOST)).ok
        assert (await prober.query(kept, query, LOCALHOST)).ok
        await asyncio.sleep(0.1)  # the spares are made
        before = prober.kept
        now[0] = 11.0  # past both reuses; only the DoH check is asked again (a reload removed the DoT one)
        result = await prober.query(kept, query, LOCALHOST)
        after = prober.kept
        await prober.aclose()
        return before, after, result.ok

    before, after, ok = with_responder(certificate, go)
    assert before == 4 and ok
    assert after == 1  # the DoH check's new connection; the DoT check's two are closed


def test_the_probers_of_tls_https_and_zones_are_made_once_when_first_used() -> None:
    probers = Probers()
    assert probers._encrypted is None and probers._zone is None
    asyncio.run(probers.aclose())  # nothing to close yet, nothing made to close it
    assert probers._encrypted is None
    assert probers.zone is probers.zone
    assert probers.encrypted is probers.encrypted
    assert probers.encrypted.kept == 0
