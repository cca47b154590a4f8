"""The router's probe engine against a tiny real DNS responder on 127.0.0.1: one socket, one timer, the same verdicts."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import pytest

from anycastd.checks.dns import ProbeResult
from anycastd.config.checks import Check
from anycastd.core.health import Decision, Outcome, ServiceHealth, State, Thresholds
from anycastd.daemons.engine import EngineError, ProbeEngine
from anycastd.daemons.skeleton import Probe
from anycastd.daemons.status import CheckStatus
from tests.unit.fake_time import until
from tests.unit.responder import Responder, serve

LOCAL = ipaddress.ip_address("127.0.0.1")


def check(port: int, interval: float = 0.05, timeout: float = 0.03) -> Check:
    return Check(LOCAL, port, "health.example.", "TXT", answer="healthy", interval=interval, timeout=timeout)


def probe(key: str, c: Check) -> Probe:
    return Probe(key, 0, c, (), ServiceHealth.create(key, [Thresholds(1, 3, 1)]), CheckStatus())


class Results:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ProbeResult]] = []

    def __call__(self, probe: Probe, result: ProbeResult, decision: Decision) -> None:
        self.seen.append((probe.key, result))

    def of(self, key: str) -> list[ProbeResult]:
        return [r for k, r in self.seen if k == key]


def free_port() -> int:
    """A port with nothing behind it: a query to it is answered by ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(body: Callable[[ProbeEngine, Results], object]) -> None:
    async def go() -> None:
        engine = ProbeEngine()
        try:
            result = body(engine, Results())
            if asyncio.iscoroutine(result):
                await result
        finally:
            engine.close()

    asyncio.run(go())


def test_a_healthy_resolver_passes_on_schedule_and_probes_due_together_share_a_wakeup() -> None:
    async def body(engine: ProbeEngine, results: Results) -> None:
        async with serve(Responder()) as r:
            probes = [probe(f"dns/s{i}/checks[0]", check(r.port)) for i in range(20)]
            for p in probes:
                engine.add(p, results, 0.0)  # all due in the same step
            await until(lambda: all(p.status.probes >= 5 for p in probes), "5 probes each", turns=10**7)
            await asyncio.sleep(0.2)
        assert all(res.ok for _, res in results.seen)
        assert all(p.health.state is State.UP and p.status.failures == 0 for p in probes)
        total = sum(p.status.probes for p in probes)
        assert engine.wakeups < total / 10  # twenty probes due together, one wake-up of the timer

    run(body)


def test_nothing_listening_fails_hard_at_once_from_the_icmp_error() -> None:
    async def body(engine: ProbeEngine, results: Results) -> None:
        p = probe("dns/dead/checks[0]", check(free_port(), interval=10.0, timeout=5.0))
        engine.add(p, results, 0.0)
        await until(lambda: bool(results.seen), "a verdict")  # long before the 5 s timeout
        result = results.of(p.key)[0]
        assert (result.outcome, result.kind, result.reason) == (
            Outcome.HARD_FAIL,
            "refused",
            "127.0.0.1: connection refused",
        )
        assert p.health.state is State.DOWN

    run(body)


def test_one_server_s_icmp_error_is_not_blamed_on_the_next_server_sent_to() -> None:
    """A port unreachable leaves an error pending on the shared socket, and the socket's next sendto returns
    it, whatever its destination: the healthy server sent to next must not be failed with it. On loopback
    the ICMP error comes back during the first send itself, so the second send of the same batch meets it."""

    async def body(engine: ProbeEngine, results: Results) -> None:
        async with serve(Responder()) as r:
            dead = probe("dns/dead/checks[0]", check(free_port(), interval=0.1, timeout=0.06))
            alive = probe("dns/alive/checks[0]", check(r.port, interval=0.1, timeout=0.06))
            engine.add(dead, results, 0.0)
            engine.add(alive, results, 0.0)  # due with the dead one, and sent after it
            await until(lambda: alive.status.probes >= 5 and dead.status.probes >= 5, "5 probes each", turns=10**7)
        assert all(res.ok for res in results.of(alive.key)), [res.reason for res in results.of(alive.key)]
        assert alive.health.state is State.UP
        assert {res.kind for res in results.of(dead.key)} == {"refused"}

    run(body)


def test_a_silent_resolver_times_out_then_is_confirmed_by_short_probes() -> None:
    async def body(engine: ProbeEngine, results: Results) -> None:
        async with serve(Responder()) as r:
            p = probe("dns/s1/checks[0]", check(r.port, interval=0.1, timeout=0.06))
            engine.add(p, results, 0.0)
            await until(lambda: p.health.state is State.UP, "UP")
            r.mode = "silent"
            await until(lambda: p.health.state is State.DOWN, "DOWN", turns=10**7)
        failures = [res for res in results.of(p.key) if not res.ok]
        assert [res.reason for res in failures[:3]] == [
            "127.0.0.1: timeout after 60 ms",
            "127.0.0.1: timeout after 20 ms",
            "127.0.0.1: timeout after 20 ms",
        ]
        assert p.status.confirming == 2 and r.queries >= 9  # each probe sent three times

    run(body)


@pytest.mark.parametrize(("mode", "kind"), [("servfail", "rcode"), ("wrong-answer", "answer"), ("wrong-id", "timeout")])
def test_a_wrong_answer_is_judged_as_the_sidecar_judges_it(mode: str, kind: str) -> None:
    async def body(engine: ProbeEngine, results: Results) -> None:
        async with serve(Responder(mode=mode)) as r:
            p = probe("dns/s1/checks[0]", check(r.port))
            engine.add(p, results, 0.0)
            await until(lambda: bool(results.seen), "a verdict", turns=10**7)
        assert results.seen[0][1].kind == kind and not results.seen[0][1].ok

    run(body)


def test_a_removed_probe_is_probed_no_more() -> None:
    async def body(engine: ProbeEngine, results: Results) -> None:
        async with serve(Responder()) as r:
            p = probe("dns/s1/checks[0]", check(r.port))
            engine.add(p, results, 0.0)
            await until(lambda: p.status.probes >= 2, "2 probes", turns=10**7)
            engine.remove(p)
            seen = p.status.probes
            await asyncio.sleep(0.2)
        assert p.status.probes == seen

    run(body)


def test_a_failing_handler_stops_the_engine_where_the_router_sees_it() -> None:
    async def body(engine: ProbeEngine, results: Results) -> None:
        def broken(probe: Probe, result: ProbeResult, decision: Decision) -> None:
            raise RuntimeError("bug")

        async with serve(Responder()) as r:
            engine.add(probe("dns/s1/checks[0]", check(r.port)), broken, 0.0)
            with pytest.raises(EngineError, match="bug"):
                await asyncio.wait_for(engine.failed, 5)

    run(body)
