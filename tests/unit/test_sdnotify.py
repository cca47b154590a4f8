"""anycastd.daemons.sdnotify against a fake notify socket: what systemd would receive, and when."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from anycastd.daemons.sdnotify import Notifier, supervise
from tests.helpers import bring_up, make_router, make_sidecar, rounds
from tests.unit.fake_time import FakeTime


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket where systemd's would be, and the environment systemd would give."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4242"}
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.mark.parametrize(
    ("env", "address", "watchdog"),
    [
        ({}, None, None),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
        ({"NOTIFY_SOCKET": "@sd/notify", "WATCHDOG_USEC": "5000000"}, "\0sd/notify", 5.0),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "4242"}, "/n", 5.0),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, "/n", None),  # not ours
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"}, "/n", None),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"}, "/n", None),
        # issue 27: a number no float holds was an OverflowError at start, '²' a ValueError
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "1" + "0" * 400}, "/n", None),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "\u00b2"}, "/n", None),
        ({"WATCHDOG_USEC": "5000000"}, None, None),  # no socket, no watchdog
    ],
)
def test_the_environment_systemd_gives_is_read(
    env: dict[str, str], address: str | None, watchdog: float | None
) -> None:
    n = Notifier(env, pid=4242)
    assert (n.address, n.watchdog, n.enabled) == (address, watchdog, address is not None)
    assert not Notifier({}).send(READY="1")  # nothing to send to: a no-op


def test_a_relative_notify_socket_is_refused_with_a_reason() -> None:
    n = Notifier({"NOTIFY_SOCKET": "notify"})
    assert not n.enabled and n.problem is not None and "absolute path" in n.problem


def test_a_message_is_one_datagram_of_one_line_fields(systemd: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = systemd
    n = Notifier(env, pid=4242)
    assert n.send(READY="1", STATUS="dns announced\n(UP)")  # a newline would forge another field
    assert received(sock) == ["READY=1\nSTATUS=dns announced (UP)"]
    n.close()


def test_a_vanished_socket_is_reported_once_and_nothing_fails(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.send(WATCHDOG="1") and not n.send(WATCHDOG="1")
    assert caplog.text.count("cannot notify systemd") == 1
    n.close()


class Daemon:
    """ready / summary / alive, set by the test."""

    def __init__(self) -> None:
        self.is_ready = False
        self.line = "dns withdrawn (down)"
        self.is_alive = True

    def ready(self) -> bool:
        return self.is_ready

    def summary(self) -> str:
        return self.line

    def alive(self) -> bool:
        return self.is_alive


def test_ready_status_watchdog_and_stopping_in_order(
    systemd: tuple[socket.socket, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    sock, env = systemd
    daemon, fake = Daemon(), FakeTime()
    seen: list[list[str]] = []

    async def go() -> None:
        stop = asyncio.Event()
        steps = iter(
            [
                lambda: None,  # starting: nothing is sent
                lambda: setattr(daemon, "is_ready", True),
                lambda: None,  # the first ping
                lambda: setattr(daemon, "is_alive", False),  # a probe loop is stuck: no ping
                lambda: setattr(daemon, "line", "dns announced (up)"),  # still stuck; a new status
                lambda: setattr(daemon, "is_alive", True),  # beating again: pinged again
                stop.set,
            ]
        )

        async def sleep(seconds: float) -> None:
            seen.append(received(sock))
            await fake.sleep(seconds)
            next(steps)()

        notifier = Notifier(env, pid=4242)
        await asyncio.wait_for(supervise(notifier, daemon, stop, "stopping: bye", sleep), 5)
        notifier.close()
        seen.append(received(sock))

    asyncio.run(go())
    assert seen == [
        [],
        [],
        ["READY=1\nSTATUS=dns withdrawn (down)", "WATCHDOG=1"],
        ["WATCHDOG=1"],
        [],
        ["STATUS=dns announced (up)"],
        ["WATCHDOG=1"],
        ["STOPPING=1\nSTATUS=stopping: bye"],
    ]
    assert caplog.text.count("a probe loop is stuck") == 1
    assert fake.now - 1000.0 == pytest.approx(2 * 0.05 + 5 * 1.0)  # polls, then pings every WatchdogSec / 3


def test_without_a_notify_socket_supervise_returns_at_once() -> None:
    async def go() -> None:
        await asyncio.wait_for(supervise(Notifier({}), Daemon(), asyncio.Event(), "stopping"), 1)

    asyncio.run(go())


def test_the_sidecar_is_ready_once_every_service_has_a_verdict_and_says_its_paths() -> None:
    sidecar, _, _, fake = make_sidecar()

    async def go() -> None:
        assert not sidecar.ready()  # not started
        sidecar.loops.arm()  # what run() does once the loops run
        assert not sidecar.ready()  # started, no verdict yet
        assert sidecar.summary() == "dns withdrawn (down)"
        await bring_up(sidecar, "dns")
        assert sidecar.ready()
        assert sidecar.summary() == "dns announced (up)"
        assert sidecar.alive()
        sidecar.liveness.beat("dns/checks[0]", 1.5)
        fake.now += 2
        assert not sidecar.alive()  # the loop missed its beat: the watchdog pings stop

    asyncio.run(go())


def test_the_router_is_ready_after_its_first_pass_over_frr() -> None:
    router, _, prober, _ = make_router()

    async def go() -> None:
        assert not router.ready()
        await rounds(router, prober)  # rise 2: no verdict yet
        assert not router.ready()
        await rounds(router, prober)
        assert router.ready()
        assert router.summary() == "dns via ns1, ns2, ns3 (3 of 3)"

    asyncio.run(go())
