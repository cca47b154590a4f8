"""`anycastd router` with FRR in a pathspace (`-N NAME`, several FRR instances on one router): it finds the
daemons where vtysh does, /var/run/frr/NAME/, through its VTY sessions and through vtysh alike (issue 27)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from anycastd.announce.frr import VtyRoutes, VtyshRoutes
from anycastd.config.router import FRR_VTY_DIR, VtyshSettings
from anycastd.core.routes import Change, StaticRoute
from anycastd_lab.daemons import FRR_DIR
from anycastd_lab.topology import run, wait_until

ROUTE = StaticRoute(ipaddress.ip_network("203.0.113.53/32"), ipaddress.ip_address("192.0.2.10"))


@pytest.fixture
def pathspace() -> Iterator[str]:
    """zebra and staticd in a namespace of their own, in the pathspace acd<pid>; everything removed after."""
    name = f"acd{os.getpid()}"
    ns = f"{name}-pathspace"
    work = Path(tempfile.mkdtemp(prefix="anycastd-pathspace-"))
    work.chmod(0o755)
    pids: list[Path] = []
    run("ip", "netns", "add", ns)
    try:
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", "192.0.2.9/29", "dev", "lo")
        for daemon in ("zebra", "staticd"):
            (work / f"{daemon}.conf").touch()
            shutil.chown(work / f"{daemon}.conf", "frr", "frr")
            pid = work / f"{daemon}.pid"
            argv = [str(FRR_DIR / daemon), "-d", "-N", name, "-f", str(work / f"{daemon}.conf"), "-i", str(pid)]
            run("chown", "frr:frr", str(work))
            run("ip", "netns", "exec", ns, *argv, "-u", "frr", "-g", "frr", "--log", f"file:{work / daemon}.log")
            pids.append(pid)
        wait_until((FRR_VTY_DIR / name / "staticd.vty").exists, 10, what="staticd's socket in the pathspace")
        yield name
    finally:
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid.read_text()), signal.SIGKILL)
        run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(FRR_VTY_DIR / name, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("spelling", [["-N", "{}"], ["--pathspace={}"], ["-N{}"]])
def test_the_vty_sessions_reach_frr_in_its_pathspace(pathspace: str, spelling: list[str]) -> None:
    settings = VtyshSettings(("vtysh", *(word.format(pathspace) for word in spelling)))
    assert settings.vty_dir == FRR_VTY_DIR / pathspace
    routes = VtyRoutes(settings)

    async def body() -> set[StaticRoute]:
        try:
            await routes.apply(Change(add=(ROUTE,)), 5353)
            installed = await routes.read()
            await routes.apply(Change(remove=(ROUTE,)), 5353)
            return {i.route for i in installed if i.tag == 5353}
        finally:
            routes.close()  # on the loop: its transports are closed where they were opened

    assert asyncio.run(body()) == {ROUTE}


def test_vtysh_reaches_it_too(pathspace: str) -> None:
    routes = VtyshRoutes(VtyshSettings(("vtysh", "-N", pathspace)))

    async def body() -> set[StaticRoute]:
        await routes.apply(Change(add=(ROUTE,)), 5353)
        return {i.route for i in await routes.read() if i.tag == 5353}

    assert asyncio.run(body()) == {ROUTE}
