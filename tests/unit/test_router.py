"""`anycastd router` with in-memory FRR, scripted probes and a fake clock: no network, no sleeps."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from anycastd.announce.frr import InMemoryRoutes
from anycastd.config.router import parse_router
from anycastd.control.protocol import (
    AnnounceReply,
    AnnounceRequest,
    CheckReply,
    CheckRequest,
    ControlError,
    StatusRequest,
    WithdrawRequest,
)
from anycastd.core.health import State
from anycastd.core.routes import Installed, StaticRoute
from anycastd.daemons.router import FIB_SETTLE
from anycastd.daemons.state import InMemoryStore, Maintenance
from anycastd.peer import Peer
from anycastd.watch.fib import InMemoryFib
from tests.helpers import TAG, TEXT, Served, ctl, hard, make_router, ok, owned, rounds, soft, via
from tests.unit.fake_time import until

PEER = Peer(pid=1, uid=0)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def test_healthy_servers_get_one_tagged_route_each_in_one_vtysh_call() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober)
        assert frr.applied == []  # rise is 2: no verdict yet, nothing changes
        await rounds(router, prober)
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")
        assert len(frr.applied) == 1 and len(frr.applied[0]) == 6
        assert frr.applied[0][0] == "ip route 203.0.113.53/32 192.0.2.2 tag 5353"
        await rounds(router, prober, 3)
        assert len(frr.applied) == 1  # nothing new: no call

    run(go)


def test_a_failed_server_leaves_and_comes_back() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober, 2)
        prober.now["ns2"] = hard
        await rounds(router, prober)
        assert frr.routes(TAG) == via("ns1", "ns3")
        assert frr.applied[-1] == [
            "no ip route 203.0.113.53/32 192.0.2.10 tag 5353",
            "no ipv6 route 2001:db8::53/128 2001:db8:0:2::2 tag 5353",
        ]
        prober.now["ns2"] = soft
        await rounds(router, prober, 3)
        prober.now["ns2"] = ok
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")
        status = router.status()["services"][0]
        assert status["routed_via"] == ["ns1", "ns2", "ns3"] and status["degraded"] is None

    run(go)


def test_a_restart_changes_nothing_it_waits_for_every_verdict() -> None:
    async def go() -> None:
        frr = InMemoryRoutes(owned("ns1", "ns2"))
        router, frr, prober, _ = make_router(frr)
        stop = asyncio.Event()
        prober.now["ns3"] = soft
        task = asyncio.create_task(router.run(stop))
        await until(lambda: all(m.health.decided for m in router.members["dns"]), "every verdict")
        assert await router.wait_synced(router.request_sync(), 5.0)  # a whole pass, with every verdict in
        stop.set()
        await task
        assert frr.applied == []
        assert frr.routes(TAG) == via("ns1", "ns2")
        assert router.choices["dns"] is not None and router.choices["dns"].servers == {"ns1", "ns2"}

    run(go)


def test_stopping_leaves_the_routes_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        router, frr, _, _ = make_router()
        stop = asyncio.Event()
        task = asyncio.create_task(router.run(stop))
        await until(lambda: frr.routes(TAG) == via("ns1", "ns2", "ns3"), "every route")
        stop.set()
        await task
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")
        assert not any(line.startswith("no ") for call in frr.applied for line in call)

    caplog.set_level("INFO")
    run(go)
    assert "FRR keeps the routes as they are: 203.0.113.53/32 via 192.0.2.2" in caplog.text


def test_when_every_server_fails_the_last_healthy_set_stays_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober, 2)
        prober.now["ns3"] = hard
        await rounds(router, prober)
        await router.sleep(1.0)  # more than the cascade window (0.75 s): ns3's loss is an event of its own
        prober.now.update(ns1=hard, ns2=soft)  # ns1 decided at once, ns2 two probes later: one event
        await rounds(router, prober, 3)
        assert frr.routes(TAG) == via("ns1", "ns2")
        status = router.status()["services"][0]
        assert "keeping the routes from before the failures began (ns1, ns2)" in status["degraded"]
        metrics = generate_latest(router.metrics.registry).decode()
        assert 'anycastd_service_degraded{service="dns"} 1.0' in metrics
        assert 'anycastd_server_healthy{server="ns1",service="dns"} 0.0' in metrics
        assert 'anycastd_server_routed{server="ns1",service="dns"} 1.0' in metrics
        prober.now["ns3"] = ok
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns3")
        assert router.status()["services"][0]["degraded"] is None

    run(go)
    # ns3 failed a second before ns1 and ns2: a cascade of its own, so ns1 and ns2 are what is kept
    assert (
        "dns: DEGRADED: no server passes its probes; keeping the routes from before the failures began (ns1, ns2)"
        in (caplog.text)
    )
    assert "dns: no longer degraded: ns3 carry it" in caplog.text


def test_a_cascade_is_timed_by_the_verdicts_not_by_when_frr_takes_them() -> None:
    """ns1's verdict comes 50 ms after ns2's while the syncer is still held up by FRR for a second: one
    cascade, so both are kept (the lab's staticd-frozen test shows it on real daemons)."""

    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober, 2)
        prober.now["ns3"] = hard
        await rounds(router, prober)
        await router.sleep(2.0)
        ns1, ns2 = (next(m for m in router.members["dns"] if m.server.name == n) for n in ("ns1", "ns2"))
        router._apply(ns2.health.feed(0, hard("ns2").for_health(), router.clock()))
        await router.sync()
        await router.sleep(0.05)
        router._apply(ns1.health.feed(0, hard("ns1").for_health(), router.clock()))
        await router.sleep(1.0)  # the syncer's next pass, a second late
        await router.sync()
        assert frr.routes(TAG) == via("ns1", "ns2")

    run(go)


def test_the_withdraw_policy_removes_every_route() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router(config=parse_router(TEXT.replace("tag: 5353", "when_all_down: withdraw")))
        await rounds(router, prober, 2)
        prober.now.update(ns1=hard, ns2=hard, ns3=hard)
        await rounds(router, prober)
        assert frr.routes(TAG) == set()

    run(go)


def test_routes_it_does_not_own_are_never_touched(caplog: pytest.LogCaptureFixture) -> None:
    mine_stale = Installed(StaticRoute(ipaddress.ip_network("203.0.113.99/32"), ipaddress.ip_address("192.0.2.2")), TAG)
    theirs = Installed(StaticRoute(ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_address("192.0.2.9")), None)
    by_hand = Installed(next(iter(sorted(via("ns1"), key=StaticRoute.sort_key))), None)  # ns1's IPv4 route, untagged

    async def go() -> None:
        router, frr, prober, _ = make_router(InMemoryRoutes([mine_stale, theirs, by_hand]))
        await rounds(router, prober, 2)
        assert theirs in frr.installed and by_hand in frr.installed
        assert mine_stale not in frr.installed
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3") - {by_hand.route}
        assert router.status()["frr"]["conflicts"] == ["203.0.113.53/32 via 192.0.2.2"]
        prober.now["ns1"] = hard
        await rounds(router, prober)
        assert by_hand in frr.installed  # still the operator's

    run(go)
    assert "routes configured by hand without tag 5353 are left alone" in caplog.text


def test_frr_failing_is_reported_with_its_words_and_repaired_later(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        frr.broken = "vtysh failed: staticd is not running"
        await rounds(router, prober, 2)
        assert router.status()["frr"]["problem"].startswith("cannot read FRR's static routes: vtysh failed: staticd")
        assert "anycastd_frr_in_sync 0.0" in generate_latest(router.metrics.registry).decode()
        frr.broken = None
        await rounds(router, prober)
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")
        assert router.status()["frr"]["in_sync"]

    run(go)
    assert "staticd is not running; the probes go on and the next sync tries again" in caplog.text


def test_a_refused_or_lost_change_is_retried_then_reported() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        frr.refuse_after = 2
        await rounds(router, prober, 2)
        assert len(frr.applied) == 3  # stopped at line 3 each time, two lines landed per attempt
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")  # 2 + 2 + 2 lines: done on the third attempt
        router2, frr2, prober2, _ = make_router()
        frr2.ignore = True
        await rounds(router2, prober2, 2)
        assert len(frr2.applied) == 3
        assert "FRR does not hold what was asked: add 203.0.113.53/32 via 192.0.2.2" in (router2.frr_problem or "")

    run(go)


def test_draining_a_server_removes_its_routes_persists_and_waits_for_frr() -> None:
    async def go() -> None:
        router, frr, prober, store = make_router()
        await rounds(router, prober, 2)
        syncer = asyncio.create_task(router._sync_loop())
        reply = await router.withdraw(WithdrawRequest(None, "kernel upgrade", "alice", True, 5, "ns2"), PEER)
        assert reply.withdrawn == ("ns2",) and reply.drain is not None and reply.drain.drained
        assert reply.drain.method == "route"
        assert frr.routes(TAG) == via("ns1", "ns3")
        assert store.drained["ns2"].reason == "kernel upgrade"
        await rounds(router, prober, 3)
        assert frr.routes(TAG) == via("ns1", "ns3")  # healthy, but drained
        server = router.status()["services"][0]["servers"][1]
        assert (server["state"], server["routed"], server["maintenance"]["who"]) == (
            "maintenance",
            False,
            "root (sudo by alice)",
        )
        announced = await router.announce(AnnounceRequest(None, "ns2"))
        assert announced == AnnounceReply(("ns2",), ())
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3") and "ns2" not in store.drained
        router._stopping = True
        router._dirty.set()
        await syncer

    run(go)


def test_draining_the_last_server_warns_that_the_service_has_no_route() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober, 2)
        prober.now.update(ns1=hard, ns2=hard)
        await rounds(router, prober)
        reply = await router.withdraw(WithdrawRequest(None, "swap disk", server="ns3"), PEER)
        assert "dns: no server carries it now" in (reply.warning or "")
        await router.sync()
        assert frr.routes(TAG) == set()

    run(go)


CONTROL_MISTAKES = [
    (
        WithdrawRequest("dns", "x"),
        "anycastd router drains servers, not services: name one with --server (ns1, ns2, ns3)",
    ),
    (WithdrawRequest(None, "x", server="ns9"), "no server 'ns9' (configured: ns1, ns2, ns3)"),
    (
        WithdrawRequest(None, "x", server="ns1", soft=True),
        "--soft keeps a BGP path tagged GRACEFUL_SHUTDOWN, and `anycastd router`'s static routes carry no community",
    ),
    (AnnounceRequest("dns"), "anycastd router announces servers, not services"),
    (AnnounceRequest(None, "ns9"), "no server 'ns9'"),
    (StatusRequest("nope"), "no service 'nope' (configured: dns)"),
    (CheckRequest("nope"), "no service 'nope'"),
]


@pytest.mark.parametrize(("request_", "expected"), CONTROL_MISTAKES, ids=[c[1][:30] for c in CONTROL_MISTAKES])
def test_control_mistakes_are_refused_and_change_nothing(request_: Any, expected: str) -> None:
    async def go() -> None:
        router, _, _, store = make_router()
        with pytest.raises(ControlError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            await router.handle(request_, PEER)
        assert router.maintenance == {} and store.saves == 0

    run(go)


def test_a_persisted_drain_holds_from_the_start_and_announce_all_lifts_it() -> None:
    async def go() -> None:
        store = InMemoryStore({"ns1": Maintenance("rack move", "bob", 1.0)})
        router, frr, prober, _ = make_router(store=store)
        router.restore_maintenance()
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns2", "ns3")
        reply = await router.handle(AnnounceRequest(None), PEER)
        assert isinstance(reply, AnnounceReply) and reply.announced == ("ns1",)
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")

    run(go)


def test_an_unreadable_state_file_drains_every_server() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router(store=InMemoryStore(broken="maintenance.json: not JSON"))
        router.restore_maintenance()
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == set() and router.status()["problem"] == "maintenance.json: not JSON"
        assert all(m.health.state is State.MAINTENANCE for m in router.members["dns"])

    run(go)


def test_check_probes_every_server_and_changes_nothing() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        prober.now["ns2"] = hard
        reply = await router.handle(CheckRequest("dns"), PEER)
        assert isinstance(reply, CheckReply)
        assert [(c.server, c.ok) for c in reply.checks] == [("ns1", True), ("ns2", False), ("ns3", True)]
        assert frr.applied == [] and all(m.status[0].probes == 0 for m in router.members["dns"])

    run(go)


def test_anycastctl_against_a_router_status_drain_and_check(tmp_path: Path) -> None:
    """The real CLI, as a subprocess, against a Router served on a real control socket."""
    router, frr, prober, _ = make_router()
    with Served(tmp_path / "control.sock", router) as served:  # type: ignore[arg-type]

        def on_loop(coro: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, served.loop).result(10)

        on_loop(rounds(router, prober, 2))
        prober.now["ns3"] = hard
        on_loop(rounds(router, prober))
        table = ctl(served.path, "status")
        assert table.returncode == 5, table.stderr  # ns3 is not routed
        lines = table.stdout.splitlines()
        assert lines[0].split()[:5] == ["SERVICE", "SERVER", "STATE", "HEALTHY", "ROUTED"]
        assert lines[3].split()[:5] == ["dns", "ns3", "down", "no", "no"]
        assert "dns: 203.0.113.53/32, 2001:db8::53/128 via ns1, ns2" in lines
        assert lines[-1].startswith("FRR (tag 5353): in step; last sync")
        drained = ctl(served.path, "withdraw", "--server", "ns2", "--reason", "swap disk")
        assert drained.returncode == 0 and drained.stdout == "ns2: drained for maintenance\n"
        on_loop(router.sync())
        assert frr.routes(TAG) == via("ns1")
        refused = ctl(served.path, "withdraw", "--all", "--reason", "x")
        assert refused.returncode == 1 and "drains servers, not services" in refused.stderr
        check = ctl(served.path, "check", "dns")
        assert check.returncode == 4  # ns3 fails
        assert "dns ns3 checks[0]: FAIL: 192.0.2.18: connection refused" in check.stdout


class MirrorFib(InMemoryFib):
    """A kernel that installs what staticd holds, except the nexthops a test makes it lose."""

    def __init__(self, frr: InMemoryRoutes) -> None:
        super().__init__()
        self.frr = frr
        self.lose: set[str] = set()

    def read(self, prefixes: Any) -> Any:
        return {
            p: frozenset(
                i.route.nexthop
                for i in self.frr.installed
                if i.route.prefix == p and str(i.route.nexthop) not in self.lose
            )
            for p in prefixes
        }


def test_a_kernel_fib_that_lost_a_nexthop_zebra_claims_is_reported_and_repaired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        frr = InMemoryRoutes()
        fib = MirrorFib(frr)
        router, _, prober, _ = make_router(frr, fib=fib)
        await rounds(router, prober, 2)
        assert router.divergence == [] and router.status()["frr"]["kernel_agrees"] is True
        fib.lose = {"192.0.2.10"}  # what FRR 8.4 did after a link flap
        changes = len(frr.applied)
        await router.sync(fresh=True)
        assert router.divergence == [] and len(frr.applied) == changes  # seen once: zebra may be catching up
        await router.sleep(FIB_SETTLE)
        await router.sync(fresh=True)
        assert [str(d) for d in router.divergence] == ["203.0.113.53/32: the kernel lacks 192.0.2.10"]
        status = router.status()["frr"]
        assert status["kernel_agrees"] is False and status["divergence"] == [str(router.divergence[0])]
        assert "anycastd_kernel_fib_agrees 0.0" in generate_latest(router.metrics.registry).decode()
        # The repair re-adds exactly the lost route, so zebra installs it afresh.
        assert frr.applied[-1] == [
            "no ip route 203.0.113.53/32 192.0.2.10 tag 5353",
            "ip route 203.0.113.53/32 192.0.2.10 tag 5353",
        ]
        assert "the kernel's FIB disagrees with zebra: 203.0.113.53/32: the kernel lacks 192.0.2.10" in caplog.text
        fib.lose = set()  # the repair took
        await router.sync()
        assert router.divergence == [] and "agrees with zebra again" in caplog.text
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")

    run(go)


def test_a_difference_gone_when_read_again_is_neither_reported_nor_repaired(caplog: pytest.LogCaptureFixture) -> None:
    """zebra still claiming a nexthop just removed, which the kernel has dropped: seen at 64 servers."""

    async def go() -> None:
        frr = InMemoryRoutes()
        fib = MirrorFib(frr)
        router, _, prober, _ = make_router(frr, fib=fib)
        await rounds(router, prober, 2)
        changes = len(frr.applied)
        fib.lose = {"192.0.2.10"}
        await router.sync(fresh=True)
        await router.sleep(FIB_SETTLE / 2)
        fib.lose = set()  # zebra caught up
        await router.sync(fresh=True)
        fib.lose = {"192.0.2.10"}  # seen again after a read without it: a new difference, not an old one
        await router.sleep(FIB_SETTLE / 2)
        await router.sync(fresh=True)
        assert router.divergence == [] and router.status()["frr"]["kernel_agrees"] is True
        assert len(frr.applied) == changes and "disagrees" not in caplog.text
        assert "anycastd_fib_divergences_total 0.0" in generate_latest(router.metrics.registry).decode()

    run(go)


def test_an_unreadable_kernel_fib_is_reported_not_repaired() -> None:
    async def go() -> None:
        frr = InMemoryRoutes()
        fib = InMemoryFib()
        fib.broken = "cannot read the kernel's routes: permission denied"
        router, _, prober, _ = make_router(frr, fib=fib)
        await rounds(router, prober, 2)
        assert router.status()["frr"]["kernel_agrees"] is None
        assert router.status()["frr"]["fib_problem"] == fib.broken
        assert len(frr.applied) == 1  # the routes themselves went in; no repair was attempted

    run(go)


def test_every_server_failing_in_one_round_keeps_every_route() -> None:
    """A common cause (a bad zone everywhere): the whole set stays, not the last server to fail."""

    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober, 2)
        prober.now.update(ns1=hard)
        await rounds(router, prober)
        assert frr.routes(TAG) == via("ns2", "ns3")  # one failure: out at once
        prober.now.update(ns2=hard, ns3=hard)
        await rounds(router, prober)  # one round later: the same cascade
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")
        assert (
            "keeping the routes from before the failures began (ns1, ns2, ns3)"
            in (router.status()["services"][0]["degraded"])
        )
        prober.now["ns2"] = ok
        await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns2")  # one recovered server alone takes the traffic

    run(go)


def test_a_flapping_server_is_damped_and_announce_all_clears_it() -> None:
    async def go() -> None:
        router, frr, prober, _ = make_router()
        await rounds(router, prober, 2)
        for _ in range(3):
            prober.now["ns1"] = hard
            await rounds(router, prober)
            prober.now["ns1"] = ok
            await rounds(router, prober, 2)
        assert frr.routes(TAG) == via("ns2", "ns3")  # healthy again, but suppressed
        server = router.status()["services"][0]["servers"][0]
        assert server["healthy"] is False and server["damping"]["suppressed"] is True
        assert server["damping"]["penalty"] > 2000
        metrics = generate_latest(router.metrics.registry).decode()
        assert 'anycastd_damping_suppressed{server="ns1",service="dns"} 1.0' in metrics
        reply = await router.handle(AnnounceRequest(None), PEER)
        assert reply == AnnounceReply((), (), ("ns1",))
        await router.sync()
        assert frr.routes(TAG) == via("ns1", "ns2", "ns3")

    run(go)


class RecordingEngine:
    """Stands in for anycastd.daemons.engine.ProbeEngine: records what it is given, fails when told to."""

    def __init__(self) -> None:
        self.added: list[tuple[str, float]] = []
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False

    def add(self, probe: Any, on_result: Any, first: float) -> None:
        self.added.append((probe.key, first))

    def close(self) -> None:
        self.closed = True


def test_udp_checks_run_on_the_engine_tcp_checks_as_tasks_and_an_engine_failure_stops_the_router() -> None:
    text = TEXT.replace("checks: [{rise: 2, fall: 2}]", "checks: [{rise: 2, fall: 2}, {protocol: tcp}]")
    engines: list[RecordingEngine] = []

    def engine() -> RecordingEngine:
        engines.append(RecordingEngine())
        return engines[-1]

    async def go() -> None:
        router, _, prober, _ = make_router(config=parse_router(text))
        router.engine_factory = engine  # type: ignore[assignment]
        task = asyncio.ensure_future(router.run(asyncio.Event()))
        await until(lambda: bool(engines) and len(engines[0].added) == 3, "the engine's probes")
        # the engine took every UDP check: what reaches the task prober is the TCP check of each server
        await until(lambda: set(prober.asked) == {"ns1", "ns2", "ns3"}, "a TCP probe of each server, as a task")
        engines[0].failed.set_exception(RuntimeError("the probe engine failed"))
        with pytest.raises(RuntimeError, match="the probe engine failed"):
            await task

    asyncio.run(go())
    assert [key for key, _ in engines[0].added] == ["dns/ns1/checks[0]", "dns/ns2/checks[0]", "dns/ns3/checks[0]"]
    assert engines[0].closed


def test_each_server_is_held_to_the_services_require() -> None:
    text = TEXT.replace(
        "    checks: [{rise: 2, fall: 2}]\n", "    checks: [{rise: 2, fall: 2}, {protocol: tcp}]\n    require: any\n"
    )
    router, _, _, _ = make_router(config=parse_router(text))
    assert {m.health.needed for m in router.members["dns"]} == {1}
    assert all(len(m.health.checks) == 2 for m in router.members["dns"])
    assert router.status()["services"][0]["servers"][0]["require"] == 1
