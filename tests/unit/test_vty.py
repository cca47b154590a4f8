"""The kept-open VTY session to FRR, against a stand-in daemon on a Unix socket that speaks the VTY protocol."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from anycastd.announce.frr import RouteError, VtyRoutes
from anycastd.config.router import VtyshSettings
from anycastd.core.routes import Change, StaticRoute

ROUTE = StaticRoute(ipaddress.ip_network("203.0.113.53/32"), ipaddress.ip_address("192.0.2.10"))
OTHER = StaticRoute(ipaddress.ip_network("203.0.113.53/32"), ipaddress.ip_address("192.0.2.18"))

Answer = Callable[[str], tuple[int, str] | None]  # None: say nothing (a stuck daemon)


class Daemon:
    """staticd as the VTY sees it: enable, configure, ip route lines, show running-config."""

    def __init__(self) -> None:
        self.routes: list[str] = []
        self.lines: list[str] = []
        self.connections = 0
        self.override: Answer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    def answer(self, line: str) -> tuple[int, str] | None:  # noqa: PLR0911 (one return per kind of line)
        self.lines.append(line)
        if self.override is not None:
            return self.override(line)
        if line in ("enable", "configure terminal", "end"):
            return 0, ""
        if line == "show running-config":
            return 0, "!\n" + "".join(r + "\n" for r in self.routes) + "!\nend\n"
        if line.startswith("no ip route "):
            route = line[3:]
            if route not in self.routes:
                return 1, "% Refusing to remove a non-existent route\n"
            self.routes.remove(route)
            return 0, ""
        if line.startswith("ip route ") and "bogus" not in line:
            self.routes.append(line)
            return 0, ""
        return 2, f"% Unknown command: {line}\n"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                line = (await reader.readuntil(b"\0"))[:-1].decode()
                said = self.answer(line)
                if said is None:
                    await asyncio.Event().wait()
                    continue
                code, text = said
                writer.write(text.encode() + b"\0\0\0" + bytes([code]))
                await writer.drain()


@contextlib.asynccontextmanager
async def frr(tmp: Path, daemon: Daemon) -> AsyncIterator[VtyRoutes]:
    servers = [await asyncio.start_unix_server(daemon.serve, str(tmp / f"{d}.vty")) for d in ("staticd", "zebra")]
    routes = VtyRoutes(VtyshSettings(("vtysh", "--vty_socket", str(tmp)), timeout=0.5))
    try:
        yield routes
    finally:
        routes.close()
        for w in daemon.writers:
            w.close()
        for s in servers:
            s.close()


def test_a_change_is_one_session_in_enable_and_config_mode_and_is_read_back(tmp_path: Path) -> None:
    async def go() -> None:
        daemon = Daemon()
        async with frr(tmp_path, daemon) as routes:
            await routes.apply(Change(add=(ROUTE, OTHER)), 5353)
            await routes.apply(Change(remove=(OTHER,)), 5353)
            installed = await routes.read()
        assert [(i.route, i.tag) for i in installed] == [(ROUTE, 5353)]
        assert daemon.connections == 1  # kept open across calls
        assert daemon.lines == [
            "enable",
            "configure terminal",
            "ip route 203.0.113.53/32 192.0.2.10 tag 5353",
            "ip route 203.0.113.53/32 192.0.2.18 tag 5353",
            "end",
            "configure terminal",
            "no ip route 203.0.113.53/32 192.0.2.18 tag 5353",
            "end",
            "show running-config",
        ]
        assert routes.describe()["backend"] == "vty" and routes.describe()["last_error"] is None

    asyncio.run(go())


def test_removing_a_route_already_gone_is_done_and_a_refused_line_ends_the_change(tmp_path: Path) -> None:
    bogus = StaticRoute(ipaddress.ip_network("203.0.113.54/32"), ipaddress.ip_address("192.0.2.10"))

    async def go() -> None:
        daemon = Daemon()
        plain = daemon.answer
        async with frr(tmp_path, daemon) as routes:
            await routes.apply(Change(remove=(ROUTE,)), 5353)  # FRR warns; the removal is done already
            daemon.answer = lambda line: (  # type: ignore[method-assign]
                (2, f"% Unknown command: {line}\n") if "203.0.113.54" in line else plain(line)
            )
            with pytest.raises(RouteError, match=r"FRR refused: Unknown command: ip route 203\.0\.113\.54/32"):
                await routes.apply(Change(add=(bogus, ROUTE)), 5353)
        assert daemon.lines[-1] == "end" and daemon.routes == []  # it stopped at the refused line
        assert routes.describe()["last_error"].startswith("FRR refused")

    asyncio.run(go())


def test_a_daemon_that_restarts_is_reached_again_by_the_next_call(tmp_path: Path) -> None:
    async def go() -> None:
        daemon = Daemon()
        async with frr(tmp_path, daemon) as routes:
            await routes.read()
            for w in daemon.writers:
                w.close()  # staticd went away with the session
            await asyncio.sleep(0.05)
            with pytest.raises(RouteError, match="the session to staticd broke"):
                await routes.read()
            assert await routes.read() == []  # the next call connects again
        assert daemon.connections == 2

    asyncio.run(go())


def test_a_daemon_that_does_not_answer_fails_the_call_within_the_timeout(tmp_path: Path) -> None:
    async def go() -> None:
        daemon = Daemon()
        async with frr(tmp_path, daemon) as routes:
            await routes.read()
            daemon.override = lambda line: None
            with pytest.raises(RouteError, match=r"staticd gave no answer within 0\.5 s"):
                await routes.read()
            daemon.override = None
            await routes.read()  # a fresh session
        assert daemon.connections == 2

    asyncio.run(go())


def test_no_daemon_at_all_says_where_it_looked(tmp_path: Path) -> None:
    async def go() -> None:
        routes = VtyRoutes(VtyshSettings(("vtysh", "--vty_socket", str(tmp_path)), timeout=0.5))
        with pytest.raises(RouteError, match=rf"staticd is not running, or {tmp_path}/staticd.vty is out of reach"):
            await routes.read()

    asyncio.run(go())


def test_zebra_is_asked_what_it_installed(tmp_path: Path) -> None:
    async def go() -> None:
        daemon = Daemon()
        fib = (
            '{"203.0.113.53/32":[{"selected":true,"installed":true,'
            '"nexthops":[{"fib":true,"ip":"192.0.2.10"},{"ip":"192.0.2.18"}]}]}'
        )
        daemon.override = lambda line: (0, fib) if line.startswith("show ip route") else (0, "")
        async with frr(tmp_path, daemon) as routes:
            hops = await routes.zebra_fib([ROUTE.prefix])
        assert hops == {ROUTE.prefix: frozenset({ROUTE.nexthop})}
        assert "show ip route 203.0.113.53/32 json" in daemon.lines

    asyncio.run(go())
