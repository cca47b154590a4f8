"""systemd's notify protocol: ready, a one-line status, watchdog pings, stopping.

Under `Type=notify` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` in the
abstract namespace) and, with `WatchdogSec=`, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``). Each message is one datagram of ``KEY=value`` lines
(sd_notify(3)). Without ``NOTIFY_SOCKET`` nothing here does anything: no socket,
no task, no wake-ups.

``supervise`` runs beside a daemon:

* ``READY=1`` once the daemon's first reconcile is done (``ready()``: the sidecar
  has a verdict for every service and has set its path; the router has a verdict
  for every server and has made one pass over FRR), with ``STATUS=``
  ``summary()``, a one-line summary that `systemctl status` shows and that is sent
  again whenever it changes.
* ``WATCHDOG=1`` every third of the watchdog interval, but only while ``alive()``:
  every probe loop has beaten within its interval + timeout + 1 s (the same
  liveness the sidecar's ExaBGP heartbeat uses). A probe loop that is stuck, or
  an event loop that is, stops the pings, and systemd kills and restarts the
  daemon (`WatchdogSec=`, `Restart=on-failure`). Its routes are withdrawn before
  that, by the ExaBGP helper's own watchdog (docs/architecture.md).
* ``STOPPING=1`` when the daemon is asked to stop, with what it does then (the
  sidecar withdraws everything and waits for the queries to stop; the router
  leaves FRR's routes as they are).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from anycastd.daemons.skeleton import sleep_unless
from anycastd.untrusted import whole_number

log = logging.getLogger(__name__)

#: How often readiness is looked at before it is reached.
STARTING_POLL = 0.05
#: How often the status line is compared (and the watchdog pinged, if it asks for nothing more often).
STATUS_EVERY = 1.0
#: Pings per watchdog interval (sd_watchdog_enabled(3) advises at least two).
PINGS_PER_INTERVAL = 3


class Notifier:
    """The datagrams to ``$NOTIFY_SOCKET``; ``enabled`` is False (and sending a no-op) without one."""

    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        self.address: str | None = None
        self.watchdog: float | None = None  # seconds
        self.problem: str | None = None
        self._sock: socket.socket | None = None
        raw = env.get("NOTIFY_SOCKET", "")
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]
        elif raw.startswith("/"):
            self.address = raw
        elif raw:
            self.problem = f"NOTIFY_SOCKET={raw!r} is neither an absolute path nor @abstract: not notifying systemd"
        usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        microseconds = whole_number(usec)
        if self.address is not None and microseconds and for_pid in ("", str(pid)):
            self.watchdog = microseconds / 1e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False (logged once) if it could not be sent."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            one = " ".join(str(value).split())  # one line: a newline would start another field
            lines.append(f"{key}={one}")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            problem = f"cannot notify systemd at {self.address!r}: {exc.strerror or exc}"
            if problem != self.problem:
                log.warning("%s", problem)
            self.problem = problem
            return False
        self.problem = None
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Supervised(Protocol):
    def ready(self) -> bool:
        """The first reconcile is done."""
        ...

    def summary(self) -> str:
        """One line for `systemctl status`."""
        ...

    def alive(self) -> bool:
        """Every probe loop has beaten in time."""
        ...


async def supervise(
    notifier: Notifier,
    daemon: Supervised,
    stop: asyncio.Event,
    stopping: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Tell systemd: ready, the status line, watchdog pings while alive, stopping (see the module's docstring)."""
    if not notifier.enabled:
        if notifier.problem is not None:
            log.warning("%s", notifier.problem)
        return
    if notifier.watchdog is not None:
        log.info("systemd watchdog: %.1f s; pinged only while every probe loop beats", notifier.watchdog)
    every = STATUS_EVERY
    if notifier.watchdog is not None:
        every = min(every, notifier.watchdog / PINGS_PER_INTERVAL)
    while not daemon.ready():
        if stop.is_set():
            break
        await sleep_unless(stop, STARTING_POLL, sleep)
    said = daemon.summary()
    if not stop.is_set():
        notifier.send(READY="1", STATUS=said)
        log.info("ready: %s", said)
    stuck = False
    while not stop.is_set():
        if notifier.watchdog is not None:
            alive = daemon.alive()
            if alive:
                notifier.send(WATCHDOG="1")
            elif not stuck:
                log.error("a probe loop is stuck: no watchdog ping; systemd restarts anycastd after WatchdogSec")
            stuck = not alive
        summary = daemon.summary()
        if summary != said:
            notifier.send(STATUS=summary)
            said = summary
        await sleep_unless(stop, every, sleep)
    notifier.send(STOPPING="1", STATUS=stopping)
