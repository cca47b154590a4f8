"""BFD for the sidecar's BGP sessions: FRR's own bfdd, run and watched by anycastd.

Theory of operation
-------------------
ExaBGP has no BFD, so a server that dies whole (power, a kernel panic, a frozen
host) keeps its paths on the router until the BGP hold timer runs out. bfdd,
FRR's BFD daemon from the Debian package ``frr``, speaks BFD (RFC 5880) for
us: anycastd writes its configuration (one ``peer`` per neighbor with ``bfd``),
starts it and watches it. The router's bgpd, with ``neighbor X bfd``, drops the
BGP session, and with it the server's paths, once BFD has heard nothing for
interval x multiplier. The BGP speaker (ExaBGP) and the BFD speaker (bfdd) share
the server's address, which is all the router matches on.

bfdd runs alone, without zebra: it needs zebra only for interface and VRF
events, and a session between two addresses with no interface named comes up
without them (tests/integration/test_bfd_lab.py). Everything of it lives in its
own pathspace under ``runtime_dir/bfdd``: configuration, pid file, VTY socket,
its control socket (``--bfdctl``) and the zebra socket it would look for, so it
coexists with an FRR the host already runs.

Failing closed, one rule per way of failing:

* anycastd dies: bfdd is started with PR_SET_PDEATHSIG (anycastd.announce.child)
  and as anycastd's own user; FRR changes no credential when it already runs as
  the user it is told to be (``-g frrvty`` satisfies its group check without a
  change of group), so the kernel keeps the request and kills bfdd too. The
  router's BFD goes down; ExaBGP has died the same way and its sessions with it.
* bfdd dies: it is started again (exponential backoff). Meanwhile the router's
  BFD goes down after the detection time, bgpd resets the BGP session, and the
  paths come back with the session (docs/reliability.md).
* bfdd hangs: it is asked ``show bfd peers json`` on its VTY socket every
  ``period``; no answer within ``bound`` and it is SIGKILLed and started again.
  A hung bfdd sends no BFD packets either, so the router has dropped the paths
  already: the restart is what brings them back.

The answers are also what `anycastctl status` and the metrics show of each
session (``peers``), and each change of a session's state is logged and counted.
bfdd's words (its configuration, its answers, its control socket's messages) are
anycastd.announce.bfdd_text.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import tenacity
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from anycastd.announce import child
from anycastd.announce.bfdd_text import (
    CONTROL_HEADER,
    MAX_CONTROL_MESSAGE,
    BfdError,
    BfdPeer,
    Session,
    parse_notification,
    parse_peers,
    render_config,
    subscribe_message,
)
from anycastd.announce.child import die_with_parent, own_user
from anycastd.announce.frr import Vty
from anycastd.config.sidecar import FRR_VTY_GROUP, Config
from anycastd.core.net import IPAddress
from anycastd.core.supervision import ChildState, moved
from anycastd.errors import AnnounceError

log = logging.getLogger(__name__)
bfdd_log = logging.getLogger("anycastd.bfdd.process")

#: How often bfdd is asked for its sessions, and how long it may take to answer before it is killed.
PERIOD = 0.5
BOUND = 1.0
#: bfdd's first answer may take longer: it reads its configuration before it opens its VTY socket.
FIRST_ANSWER = 5.0
#: What bfdd asks the kernel for at start, and exits without (FRR's bfdd_privs): its ports, raw sockets, VRFs.
BFDD_CAPABILITIES = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}
#: The drop-in that gives the systemd unit those capabilities (docs/operations.md).
BFD_DROP_IN = "packaging/systemd/anycastd.service.d/bfd.conf"


def missing_capabilities(status: str) -> list[str]:
    """The capabilities bfdd needs that a child of this process would not get, from /proc/self/status:
    root's children get the bounding set; anyone else's only the ambient set."""
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    uids = fields.get("Uid", "").split()
    passed = fields.get("CapBnd" if uids[:2] == ["0", "0"] else "CapAmb", "0").strip()
    have = int(passed, 16) if passed else 0
    return [name for name, bit in BFDD_CAPABILITIES.items() if not have >> bit & 1]


class BfdSpeaker(Protocol):
    """What the sidecar needs of a BFD speaker: bfdd (``Bfdd``), or sessions set by hand (``InMemoryBfd``)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def restarts(self) -> int:
        """How many times bfdd has been started again."""
        ...

    def session_states(self) -> dict[str, str]:
        """Each neighbor's session state (SESSION_STATES), by address."""
        ...

    def describe(self) -> dict[str, Any]:
        """The status document's ``bfd`` section: the speaker's own state and each session's."""
        ...


async def on_link(address: IPAddress) -> bool:
    """Whether the kernel reaches ``address`` with no gateway: single-hop BFD (RFC 5881), else multihop
    (RFC 5883). If the kernel cannot be asked, single-hop: the neighbor is a BGP peer on the link."""
    try:
        async with AsyncIPRoute() as ipr:
            routes = list(await ipr.route("get", dst=str(address)))
    except (OSError, NetlinkError) as exc:
        log.warning("cannot ask the kernel how %s is reached (%s); BFD with it is single-hop", address, exc)
        return True
    return all(route.get_attr("RTA_GATEWAY") is None for route in routes)


async def peers_of(config: Config, on_link: Callable[[IPAddress], Awaitable[bool]] = on_link) -> list[BfdPeer]:
    return [
        BfdPeer(n.address, n.local_address, n.bfd, multihop=not await on_link(n.address))
        for n in config.neighbors
        if n.bfd is not None
    ]


class Bfdd:
    """bfdd as a supervised child of anycastd (see the module's docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        on_link: Callable[[IPAddress], Awaitable[bool]] = on_link,
        on_change: Callable[[str, str], None] = lambda neighbor, state: None,
        restart_wait: tenacity.wait.wait_base | None = None,
        period: float = PERIOD,
        bound: float = BOUND,
        flaps: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.config = config
        #: Each session's flap damping (anycastd.announce.flaps), for status: held back or not, and its penalty.
        self.flaps = flaps
        self.dir = config.runtime_dir / "bfdd"
        self.config_path = self.dir / "bfdd.conf"
        self._on_link = on_link
        self.on_change = on_change
        self.period = period
        self.bound = bound
        self._restart_wait = restart_wait or tenacity.wait_exponential(multiplier=0.25, max=10)
        self.peers: list[BfdPeer] = []
        #: Each neighbor's session as bfdd last said; None until it has.
        self.sessions: dict[IPAddress, Session | None] = {n.address: None for n in config.bfd_neighbors}
        #: starting, up, unresponsive, restarting or stopped: what status and metrics show.
        self.state = ChildState.STARTING  # anycastd.core.supervision
        self.restarts = 0
        self.last_problem: str | None = None
        self.last_answer: float | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # public ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            missing = missing_capabilities(Path("/proc/self/status").read_text())
        except OSError:
            missing = []  # no /proc: bfdd says for itself, in its last words
        if missing:
            raise BfdError(
                f"BFD is configured, but bfdd cannot start: it needs {', '.join(missing)}, which anycastd cannot "
                f"pass on. Under systemd, install {BFD_DROP_IN} as /etc/systemd/system/anycastd.service.d/bfd.conf "
                "(docs/operations.md), or remove bfd from the neighbors"
            )
        self.peers = await peers_of(self.config, self._on_link)
        for p in self.peers:
            if p.multihop:
                log.warning("BFD with %s: not on a connected subnet, so multihop (RFC 5883, port 4784)", p.neighbor)
        try:
            self.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            tmp = self.config_path.with_suffix(".tmp")
            tmp.write_text(render_config(self.peers))
            tmp.replace(self.config_path)
            for stale in ("bfdd.vty", "bfdd.sock", "bfdd.pid"):
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / stale).unlink()
        except OSError as exc:
            raise BfdError(f"cannot prepare bfdd in {self.dir}: {exc}") from None
        self._spawn(self._supervise())

    async def close(self) -> None:
        self._closing = True
        await child.stop(self._process, "bfdd")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._set_state(ChildState.STOPPED)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    def session_states(self) -> dict[str, str]:
        """Each neighbor's BFD state, "unknown" while bfdd has not said (or is not answering)."""
        answering = self.state is ChildState.UP
        return {str(a): s.state if s is not None and answering else "unknown" for a, s in self.sessions.items()}

    def describe(self) -> dict[str, Any]:
        by_address = {p.neighbor: p for p in self.peers}
        flaps = self.flaps()
        sessions = {}
        for address, session in self.sessions.items():
            peer = by_address.get(address)
            configured = next(n.bfd for n in self.config.bfd_neighbors if n.address == address)
            sessions[str(address)] = {
                "state": self.session_states()[str(address)],
                "interval_ms": configured.interval_ms if configured else None,
                "multiplier": configured.multiplier if configured else None,
                "multihop": peer.multihop if peer else None,
                "bfdd": session.to_json() if session is not None else None,
                "damping": flaps.get(str(address)),
            }
        return {
            "state": str(self.state),
            "pid": self.pid,
            "restarts": self.restarts,
            "problem": self.last_problem,
            "last_answer": self.last_answer,
            "sessions": sessions,
        }

    # internals ------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set_state(self, state: ChildState) -> None:
        self.state = moved("bfdd", self.state, state)

    def command(self) -> list[str]:
        d = self.dir
        return [
            *self.config.bfdd.command,
            "-f", str(self.config_path),
            "-i", str(d / "bfdd.pid"),
            "-z", str(d / "zserv.api"),  # never there: bfdd runs without zebra, and must not find the host's
            "--vty_socket", str(d),
            "--bfdctl", str(d / "bfdd.sock"),
            # anycastd's own user: no change of credentials, so PR_SET_PDEATHSIG holds (see above)
            "-u", own_user(),
            "-g", FRR_VTY_GROUP,
            "--log", "stdout",
        ]  # fmt: skip

    async def _supervise(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._closing:
            started = loop.time()
            tail: collections.deque[str] = collections.deque(maxlen=10)
            code: int | None = None
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self.command(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                    start_new_session=True,  # a Ctrl-C meant for anycastd must not reach bfdd first
                )
            except OSError as exc:
                self.last_problem = f"cannot start bfdd ({self.config.bfdd.command[0]}): {exc.strerror or exc}"
                log.error("%s", self.last_problem)
            else:
                proc = self._process
                log.info(
                    "started bfdd (pid %d) for BFD with %s", proc.pid, ", ".join(str(p.neighbor) for p in self.peers)
                )
                self._set_state(ChildState.STARTING)
                watch = asyncio.gather(self._watch(proc), self._listen(proc))
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    tail.append(line)
                    bfdd_log.debug("%s", line)
                code = await proc.wait()
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            if self._closing:
                return
            self._forget_sessions()
            self._set_state(ChildState.RESTARTING)
            self.restarts += 1
            if loop.time() - started > 30:
                attempt = 0
            attempt += 1
            delay = child.restart_delay(self._restart_wait, attempt)
            why = child.exit_text(code)
            log.warning(
                "bfdd exited (%s): the router's BFD sessions go down and it resets their BGP sessions. "
                "Restarting it in %.2f s. Its last words:\n  %s",
                why,
                delay,
                "\n  ".join(tail) or "(none)",
            )
            await asyncio.sleep(delay)

    def _forget_sessions(self) -> None:
        for address, session in self.sessions.items():
            if session is not None and session.state != "unknown":
                self._changed(address, session.state, "unknown", "bfdd is not running")
            self.sessions[address] = None

    def _changed(self, address: IPAddress, old: str, new: str, why: str) -> None:
        level = logging.WARNING if old == "up" and not self._closing else logging.INFO
        log.log(level, "BFD with %s: %s -> %s%s", address, old, new, f" ({why})" if why else "")
        self.on_change(str(address), new)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Ask bfdd for its sessions every period; kill it when it does not answer within the bound."""
        vty = Vty(self.dir / "bfdd.vty", self.bound)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answered = False
        try:
            while proc.returncode is None:
                asked = loop.time()
                try:
                    _, text = await vty.command("show bfd peers json")
                    self._update(parse_peers(text))
                    answered = True
                except AnnounceError as exc:
                    if not answered and loop.time() - started < FIRST_ANSWER:
                        await asyncio.sleep(self.period)  # still starting: its socket may not be there yet
                        continue
                    self.last_problem = f"bfdd did not answer within {self.bound:g} s ({exc})"
                    log.error("%s; killing it (pid %d) and starting it again", self.last_problem, proc.pid)
                    self._set_state(ChildState.UNRESPONSIVE)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    return
                await asyncio.sleep(max(0.0, asked + self.period - loop.time()))
        finally:
            vty.close()

    async def _listen(self, proc: asyncio.subprocess.Process) -> None:
        """bfdd's notifications on its control socket: each session's state the moment it changes (the VTY poll
        fills in the rest every period). Without them, the poll alone says it, a period later."""
        path = self.dir / "bfdd.sock"
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer: asyncio.StreamWriter | None = None
        try:
            while proc.returncode is None:
                try:
                    reader, writer = await asyncio.open_unix_connection(str(path))
                    break
                except OSError:
                    if loop.time() - started > FIRST_ANSWER:
                        log.warning("bfdd's control socket %s is not there: BFD states are polled only", path)
                        return
                    await asyncio.sleep(0.05)
            else:
                return
            writer.write(subscribe_message())
            await writer.drain()
            while True:
                length, _, kind, _ = CONTROL_HEADER.unpack(await reader.readexactly(CONTROL_HEADER.size))
                if length > MAX_CONTROL_MESSAGE:
                    raise BfdError(f"bfdd announced a control message of {length} bytes")
                said = parse_notification(kind, await reader.readexactly(length))
                if said is not None and said[0] in self.sessions:
                    self._notified(*said)
        except (OSError, asyncio.IncompleteReadError, BfdError) as exc:
            if proc.returncode is None:
                log.warning("bfdd's control socket: %s; BFD states are polled only", exc or type(exc).__name__)
        finally:
            if writer is not None:
                writer.close()

    def _notified(self, address: IPAddress, state: str) -> None:
        old = self.sessions[address]
        before = old.state if old is not None else "unknown"
        if before == state:
            return
        self.sessions[address] = (
            replace(old, state=state) if old is not None else Session(state, "", "", None, None, None, None, None)
        )
        self._changed(address, before, state, "bfdd's notification")

    def _update(self, said: dict[IPAddress, Session]) -> None:
        self.last_answer = time.time()
        self._set_state(ChildState.UP)
        for address in self.sessions:
            old = self.sessions[address]
            new = said.get(address)
            before = old.state if old is not None else "unknown"
            after = new.state if new is not None else "unknown"
            if before != after:
                self._changed(address, before, after, new.diagnostic if new is not None and after != "up" else "")
            self.sessions[address] = new


class InMemoryBfd:
    """For tests: sessions set by hand, nothing run."""

    def __init__(self, states: dict[str, str] | None = None) -> None:
        self.states = dict(states or {})
        self.started = self.closed = False
        self.restarts = 0

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def session_states(self) -> dict[str, str]:
        return dict(self.states)

    def describe(self) -> dict[str, Any]:
        return {"state": "up", "pid": None, "restarts": 0, "problem": None, "last_answer": None, "sessions": {}}
