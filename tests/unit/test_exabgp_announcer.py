"""The ExaBGP supervisor against a stand-in ExaBGP (a real process tree, no BGP, no root)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from anycastd.announce.exabgp import AckTimeout, ExaBGPAnnouncer, heartbeat_bounds
from anycastd.config.sidecar import Config, parse
from anycastd.core.attributes import RouteAttributes
from anycastd.errors import AnnounceError
from tests.helpers import GOOD

FAKE = Path(__file__).with_name("fake_exabgp.py")
V4 = ipaddress.ip_network("203.0.113.53/32")
V6 = ipaddress.ip_network("2001:db8::53/128")


def config(tmp_path: Path) -> Config:
    extra = f"runtime_dir: {tmp_path}\nexabgp:\n  command: [{sys.executable}, {FAKE}]\n  watchdog: 5\n"
    return parse(GOOD + extra)


def commands(announcer: ExaBGPAnnouncer) -> list[str]:
    log = Path(str(announcer.config_path) + ".log")
    return log.read_text().splitlines() if log.exists() else []


@contextlib.asynccontextmanager
async def running(announcer: ExaBGPAnnouncer) -> AsyncIterator[ExaBGPAnnouncer]:
    """Started, with the stand-in ExaBGP's helper connected; closed on the way out."""
    await announcer.start()
    try:
        await asyncio.wait_for(announcer.connected.wait(), 10)
        yield announcer
    finally:
        await announcer.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_what_several_services_want_is_flushed_as_one_batch(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            await eventually(lambda: announcer.sessions() == {"192.0.2.9": "up", "2001:db8:0:1::1": "up"})
            for i in range(3):
                announcer.want(f"s{i}", [ipaddress.ip_network(f"203.0.113.{60 + i}/32")], True)
            assert commands(announcer) == []  # wanted, not yet sent
            await announcer.flush()
            assert commands(announcer) == [
                "neighbor 192.0.2.9 announce attributes next-hop self nlri 203.0.113.60/32 203.0.113.61/32 "
                "203.0.113.62/32"
            ]
            await eventually(lambda: len(announcer.announced_prefixes()) == 3)  # once ExaBGP's state is up
            announcer.want("s0", [ipaddress.ip_network("203.0.113.60/32")], True)  # as it is: nothing new
            await announcer.flush()
            assert len(commands(announcer)) == 1
            for i in range(3):
                announcer.want(f"s{i}", [], False)
            await announcer.flush()
            assert commands(announcer)[-1] == (
                "neighbor 192.0.2.9 withdraw attributes next-hop self nlri 203.0.113.60/32 203.0.113.61/32 "
                "203.0.113.62/32"
            )
            assert announcer.announced_prefixes() == frozenset()

    asyncio.run(go())


def test_announces_per_family_acknowledged_and_replays_after_exabgp_dies(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            await eventually(lambda: announcer.sessions() == {"192.0.2.9": "up", "2001:db8:0:1::1": "up"})
            await announcer.set_announced("dns", [V4, V6], True)
            assert commands(announcer) == [
                "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self",  # each neighbor's batch in turn
                "neighbor 2001:db8:0:1::1 announce route 2001:db8::53/128 next-hop self",
            ]
            await announcer.set_announced("dns", [V4, V6], True)  # no change, nothing sent
            assert len(commands(announcer)) == 2

            first = announcer.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await eventually(lambda: announcer.pid not in (None, first) and len(commands(announcer)) == 4)
            assert announcer.restarts == 1
            assert commands(announcer)[2:] == commands(announcer)[:2]  # the new ExaBGP got the same set

            await announcer.set_announced("dns", [V4, V6], False)
            assert commands(announcer)[4:] == [
                "neighbor 192.0.2.9 withdraw route 203.0.113.53/32 next-hop self",  # each neighbor's batch in turn
                "neighbor 2001:db8:0:1::1 withdraw route 2001:db8::53/128 next-hop self",
            ]
        assert announcer.pid is None
        assert not announcer.socket_path.exists()

    asyncio.run(go())


def test_an_error_acknowledgement_is_reported(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            with pytest.raises(
                AnnounceError, match=re.escape("answered 'error' to 'neighbor 192.0.2.9 announce route 192.0.2.66/32")
            ):
                await announcer.set_announced("bad", [ipaddress.ip_network("192.0.2.66/32")], True)

    asyncio.run(go())


def test_an_exabgp_that_stops_answering_is_killed_and_restarted(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path), ack_timeout=0.5)
        async with running(announcer):
            first = announcer.pid
            # Asleep with a command unanswered: stuck, killed at the stall bound (0.25 s) by the heartbeat's
            # watch, before the command's own deadline (0.5 s) runs out.
            with contextlib.suppress(AnnounceError):
                await announcer.set_announced("wedged", [ipaddress.ip_network("192.0.2.67/32")], True)
            await eventually(lambda: announcer.restarts >= 1 and announcer.pid not in (None, first))
            assert announcer.last_problem is not None and "nor its helper is running (states " in (
                announcer.last_problem
            )

    asyncio.run(go())


def test_an_exabgp_busy_past_the_command_deadline_is_killed_and_restarted(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path), ack_timeout=0.5)
        async with running(announcer):
            first = announcer.pid
            with pytest.raises(AckTimeout, match="did not acknowledge"):  # 1 s of work, 0.5 s allowed
                await announcer.set_announced("busy", [ipaddress.ip_network("192.0.2.68/32")], True)
            await eventually(lambda: announcer.restarts >= 1 and announcer.pid not in (None, first))
            assert (
                announcer.last_problem
                == "ExaBGP did not acknowledge 'neighbor 192.0.2.9 announce route 192.0.2.68/32 next-hop self'"
            )

    asyncio.run(go())


def test_desired_state_waits_for_exabgp(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        await announcer.set_announced("dns", [V4], True)  # before start: kept, not sent
        async with running(announcer):
            await eventually(lambda: len(commands(announcer)) == 1)
            assert commands(announcer) == ["neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self"]

    asyncio.run(go())


def test_unusable_runtime_dir_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    announcer = ExaBGPAnnouncer(config(blocker / "sub"))
    with pytest.raises(AnnounceError, match="cannot prepare ExaBGP in"):
        asyncio.run(announcer.start())


def gone(pid: int) -> bool:
    """Exited, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_helper_takes_its_exabgp_down_and_a_fresh_pair_announces_the_same(tmp_path: Path) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            await eventually(lambda: announcer.state == "up")
            await announcer.set_announced("dns", [V4], True)
            first, helper = announcer.pid, announcer._helper.pid if announcer._helper else None
            assert first is not None and helper is not None
            os.kill(helper, signal.SIGKILL)
            await eventually(lambda: gone(first))  # ExaBGP does not run on without its helper
            await eventually(lambda: announcer.pid not in (None, first) and announcer.state == "up")
            assert announcer.last_problem == "ExaBGP's helper went away"
            await eventually(lambda: len(commands(announcer)) == 2)
            assert commands(announcer)[1] == commands(announcer)[0]  # the fresh ExaBGP got the same set

    asyncio.run(go())


@pytest.mark.parametrize("frozen", ["exabgp", "helper"])
def test_a_stopped_exabgp_or_helper_misses_its_heartbeat_and_the_pair_is_killed_and_replaced(
    tmp_path: Path, frozen: str
) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        states: list[str] = []
        async with running(announcer):
            await eventually(lambda: announcer.state == "up")
            first, helper = announcer.pid, announcer._helper.pid if announcer._helper else None
            assert first is not None and helper is not None
            os.kill(first if frozen == "exabgp" else helper, signal.SIGSTOP)

            def replaced() -> bool:
                states.append(announcer.state)
                return announcer.pid not in (None, first)

            stopped = asyncio.get_running_loop().time()
            await eventually(replaced)
            # At the stall bound (0.25 s), not the answer bound (2 s): the stopped process is not running.
            assert asyncio.get_running_loop().time() - stopped < 1.5
            await eventually(lambda: gone(first) and gone(helper))  # SIGKILL ends stopped processes too
            # the states of ExaBGP and its helper, as read once judged: the stopped one is T
            stopped_state = r"T, \w" if frozen == "exabgp" else r"\w, T"
            assert announcer.last_problem is not None
            assert re.fullmatch(
                rf"ExaBGP answered no heartbeat within 0\.25 s, and neither it nor its helper is running \(states "
                rf"{stopped_state}\)",
                announcer.last_problem,
            ), announcer.last_problem
            await eventually(lambda: announcer.state == "up")
            assert announcer.describe()["last_answer"] is not None

    asyncio.run(go())


def test_a_busy_exabgp_is_slow_not_stuck_and_keeps_its_sessions(tmp_path: Path) -> None:
    """The stand-in spends 1 s on the CPU before it answers: past the stall bound (0.25 s), inside the answer
    bound (2 s). It is seen running, so it is unresponsive for a while, and not killed."""

    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        states: list[str] = []
        async with running(announcer):
            await eventually(lambda: announcer.state == "up")
            first = announcer.pid
            await announcer.set_announced("busy", [ipaddress.ip_network("192.0.2.68/32")], True)

            def answered() -> bool:
                states.append(announcer.state)
                return announcer.state == "up"

            await eventually(answered)
            assert "unresponsive" in states  # status said so while it worked
            assert announcer.pid == first and announcer.restarts == 0 and announcer.last_problem is None

    asyncio.run(go())


def test_heartbeat_bounds_follow_the_probe_interval() -> None:
    fast = parse(GOOD.replace("interval: 0.5", "interval: 0.2").replace("timeout: 0.25", "timeout: 0.15"))
    assert heartbeat_bounds(fast) == (0.1, 1.0)  # the default interval: asked twice per interval
    slow = parse(GOOD.replace("interval: 0.5", "interval: 5").replace("timeout: 0.25", "timeout: 1"))
    assert heartbeat_bounds(slow) == (0.125, 2.0)  # twice per stall bound; still inside the 3 s bound for a freeze
    stall = parse(GOOD + "exabgp:\n  stall: 0.15\n")
    assert heartbeat_bounds(stall) == (0.075, 2.0)


def test_graceful_shutdown_re_announces_the_path_tagged_and_back_untagged(tmp_path: Path) -> None:
    """A change of attributes is a new announcement of the same prefix (it replaces the path); a
    community that is not ASN:VALUE never reaches ExaBGP's API."""
    gshut = RouteAttributes(communities=("65535:0",))

    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            await announcer.set_announced("dns", [V4], True)
            await announcer.set_announced("dns", [V4], True, gshut)
            await announcer.set_announced("dns", [V4], True, gshut)  # no change, nothing sent
            await announcer.set_announced("dns", [V4], True)
            assert commands(announcer) == [
                "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self",
                "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self community [65535:0]",
                "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self",
            ]
            assert announcer.announced_routes() == {V4: RouteAttributes()}
            for bad in ("65536:0", "1:2 3:4", "no-export\nneighbor 192.0.2.9 withdraw route 0.0.0.0/0", ""):
                with pytest.raises(AnnounceError, match="a BGP community is two numbers"):
                    await announcer.set_announced("dns", [V4], True, RouteAttributes(communities=(bad,)))
            assert len(commands(announcer)) == 3

    asyncio.run(go())


def test_every_attribute_reaches_exabgp_as_its_own_words(tmp_path: Path) -> None:
    steer = RouteAttributes(("64500:200", "64500:7"), ("64500:1:2",), 200, 3)

    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            await announcer.set_announced("dns", [V4], True, steer)
            await announcer.set_announced("dns", [V4], True, steer.tagged("65535:0"))  # failing, kept
            await announcer.set_announced("dns", [V4], False)
            assert commands(announcer) == [
                "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self med 200"
                " community [64500:200 64500:7] large-community [64500:1:2] as-path [65001 65001 65001 65001]",
                "neighbor 192.0.2.9 announce route 203.0.113.53/32 next-hop self med 200"
                " community [64500:200 64500:7 65535:0] large-community [64500:1:2] as-path [65001 65001 65001 65001]",
                "neighbor 192.0.2.9 withdraw route 203.0.113.53/32 next-hop self",
            ]

    asyncio.run(go())


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        (RouteAttributes(large_communities=("1:2",)), "a large BGP community is three numbers"),
        (RouteAttributes(large_communities=("4294967296:0:0",)), "a large BGP community is three numbers"),
        (RouteAttributes(large_communities=("1:2:3]\nneighbor 192.0.2.9 withdraw route 0.0.0.0/0",)), "three numbers"),
        (RouteAttributes(med=-1), "MED must be between"),
        (RouteAttributes(med=2**32), "MED must be between"),
        (RouteAttributes(as_path_prepend=11), "as_path_prepend must be between"),
    ],
)
def test_an_attribute_out_of_range_never_reaches_exabgp(
    tmp_path: Path, attributes: RouteAttributes, problem: str
) -> None:
    async def go() -> None:
        announcer = ExaBGPAnnouncer(config(tmp_path))
        async with running(announcer):
            with pytest.raises(AnnounceError, match=problem):
                await announcer.set_announced("dns", [V4], True, attributes)
            assert commands(announcer) == []

    asyncio.run(go())
