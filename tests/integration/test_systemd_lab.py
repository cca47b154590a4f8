"""Both daemons under a fake systemd: the notify socket systemd would give, and what systemd would do.

The daemons are the real ones, in the lab, with real FRR, ExaBGP and Unbound. The test plays the
service manager: it binds ``NOTIFY_SOCKET``, sets ``WATCHDOG_USEC`` and, when the pings stop for
longer than that, kills the daemon and starts it again, as `WatchdogSec=` and `Restart=on-failure`
do.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anycastd_lab.bgp import BgpLab
from anycastd_lab.static import StaticLab

WATCHDOG = 2.0  # seconds, as WATCHDOG_USEC gives it


class FakeSystemd:
    """The notify socket's other end: every datagram, as (monotonic time, its fields)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, dict[str, str]]] = []

    def env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NOTIFY_SOCKET", str(self.path))
        monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG * 1e6)))

    def read(self, seconds: float) -> list[dict[str, str]]:
        """What arrives within ``seconds``."""
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.split("\n"))
            self.got.append((time.monotonic(), fields))
            out.append(fields)
        return out

    def wait_for(self, key: str, seconds: float) -> dict[str, str]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for fields in self.read(0.1):
                if key in fields:
                    return fields
        raise AssertionError(f"no {key} within {seconds} s; got {[f for _, f in self.got]}")

    def silent_for(self, key: str, seconds: float, limit: float) -> float:
        """Wait (at most ``limit``) until ``key`` has not come for ``seconds``: systemd's watchdog expiring."""
        started = last = time.monotonic()
        while time.monotonic() - started < limit:
            if any(key in f for f in self.read(0.1)):
                last = time.monotonic()
            if time.monotonic() - last >= seconds:
                return time.monotonic() - started
        raise AssertionError(f"{key} kept coming for {limit} s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    yield fake
    fake.close()


def test_the_sidecar_is_ready_pinged_and_restarted_by_the_watchdog_when_it_hangs(
    lab: BgpLab, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = lab.servers[0]
    lab.kill_anycastd(server)
    lab.wait_server(server, present=False)
    systemd.env(monkeypatch)
    try:
        lab.start_anycastd(server)
        ready = systemd.wait_for("READY", 15)
        assert ready["READY"] == "1" and ready["STATUS"].startswith("dns ")  # one line, for systemctl status
        systemd.wait_for("WATCHDOG", WATCHDOG)
        lab.wait_server(server, present=True, timeout=10)
        # the event loop hangs: the pings stop, and systemd (this test) kills and restarts the daemon
        lab.signal_anycastd(server, signal.SIGSTOP)
        systemd.silent_for("WATCHDOG", WATCHDOG, limit=10)
        lab.wait_server(server, present=False, timeout=5)  # withdrawn meanwhile: its helper's watchdog
        lab.kill_anycastd(server)  # systemd's WatchdogSignal= then SIGKILL
        lab.start_anycastd(server)  # Restart=on-failure
        assert systemd.wait_for("READY", 15)["READY"] == "1"
        lab.wait_server(server, present=True, timeout=10)
        # stopping: STOPPING=1 first, then the drain-and-exit
        lab.signal_anycastd(server, signal.SIGTERM)
        stopping = systemd.wait_for("STOPPING", 5)
        assert stopping["STATUS"].startswith("stopping: withdrawing")
    finally:
        monkeypatch.delenv("NOTIFY_SOCKET")
        monkeypatch.delenv("WATCHDOG_USEC")
        lab.signal_anycastd(server, signal.SIGCONT)
        lab.kill_anycastd(server)
        lab.start_anycastd(server)  # as the other tests expect it: no systemd


def test_the_router_is_ready_after_its_first_pass_and_says_where_the_service_is_routed(
    router_lab: StaticLab, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    router_lab.stop_anycastd()
    systemd.env(monkeypatch)
    try:
        router_lab.start_anycastd()
        ready = systemd.wait_for("READY", 15)
        names = ", ".join(s.name for s in router_lab.servers)
        assert ready["STATUS"] == f"dns via {names} ({len(router_lab.servers)} of {len(router_lab.servers)})"
        systemd.wait_for("WATCHDOG", WATCHDOG)
    finally:
        monkeypatch.delenv("NOTIFY_SOCKET")
        monkeypatch.delenv("WATCHDOG_USEC")
        router_lab.stop_anycastd()
        router_lab.start_anycastd()
