"""Announce through ExaBGP, run as a supervised child process, fail-closed.

Theory of operation
-------------------
anycastd writes ExaBGP's configuration from its own (one file for the
operator), listens on a Unix socket in its runtime directory and starts
ExaBGP. ExaBGP starts its API helper (``exabgp_helper.py``), which connects
to that socket; from then on anycastd writes API commands in text encoding
and reads ExaBGP's ``done``/``error`` acknowledgements and neighbor events.

The routes must never outlive anycastd's judgement. Three mechanisms, one per
way of failing:

* anycastd dies (SIGKILL, OOM): ExaBGP is started with PR_SET_PDEATHSIG, so
  the kernel kills it with its parent; the BGP sessions close and the router
  drops the paths at once. The helper also sees the socket close.
* anycastd stalls (SIGSTOP, a deadlock, a stuck probe loop): anycastd sends
  heartbeats only while every probe loop is making progress (``_pulse``, in
  the same wake-up and write as ExaBGP's heartbeat below); the helper
  kills ExaBGP when none has come for ``exabgp.stall`` seconds and anycastd
  is not running, or for ``exabgp.watchdog`` seconds whatever it does.
* ExaBGP dies: anycastd starts it again (exponential backoff) and, when the
  new helper connects, announces again exactly the desired set.
* ExaBGP hangs (SIGSTOP, a deadlock, a busy loop) or its helper hangs:
  anycastd sends a heartbeat command *through* ExaBGP (an API comment, which
  ExaBGP acknowledges) every ``heartbeat_period``. No answer within
  ``exabgp.stall`` while neither process is running or waiting for a CPU
  (read from /proc: stopped, or asleep with the heartbeat unanswered), or
  none within ``answer_bound`` whatever they are doing, and anycastd
  SIGKILLs ExaBGP. The kernel closes its BGP sessions, the router drops the
  paths, and a fresh ExaBGP is started.
* The helper dies or its connection closes: anycastd kills ExaBGP at once;
  an ExaBGP whose API process is gone would otherwise go on announcing with
  nothing in control of it. The helper in turn dies with ExaBGP
  (PR_SET_PDEATHSIG), so neither outlives the other.

Because the desired set lives here and every new helper connection starts
from an empty ExaBGP, a restart can only ever announce what is healthy now.

Why one module of about 600 lines: the process's lifecycle, the helper's
connection, the heartbeat and the replay of the desired set share one state
(which ExaBGP, which helper, what it has acknowledged), and every fail-closed
rule above is a decision across all of them; split apart, those rules would be
read in three places. ExaBGP's words (the commands that take what it
has to what is desired, its events and log lines) are anycastd.announce.exabgp_text,
its state machine anycastd.core.supervision, its configuration exabgp_config.py,
and the helper is its own program (exabgp_helper.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import tenacity

from anycastd.announce import child, exabgp_helper
from anycastd.announce.child import die_with_parent, own_user
from anycastd.announce.exabgp_config import render_config
from anycastd.announce.exabgp_text import (
    HEARTBEAT_COMMAND,
    Ack,
    SessionEvent,
    batched,
    hold_commands,
    parse_event,
    relay,
    route_changes,
    route_words,
)
from anycastd.config.sidecar import Config
from anycastd.core.attributes import PLAIN, RouteAttributes
from anycastd.core.clock import iso
from anycastd.core.net import IPNetwork
from anycastd.core.supervision import ChildState, may, moved
from anycastd.errors import AnnounceError
from anycastd.peer import peer_of

log = logging.getLogger(__name__)
exabgp_log = logging.getLogger("anycastd.exabgp.process")

ACK_TIMEOUT = 5.0


def heartbeat_bounds(config: Config) -> tuple[float, float]:
    """How often ExaBGP is asked for a sign of life, and how long it may take to answer when busy.

    Derived from the fastest probe interval: ExaBGP is asked twice per interval (between 0.05 and
    0.25 s, and at least twice per ``exabgp.stall``). One that has not answered within
    ``exabgp.stall`` and is not running (nor is its helper) is killed then; one that is busy or
    starved of CPU may take five intervals, between 1 and 2 s. Either way a frozen ExaBGP is
    killed, and its sessions closed, well inside the 3 s bound for a freeze (docs/reliability.md).
    """
    interval = min((c.interval for s in config.services for c in s.checks), default=0.5)
    period = min(max(interval / 2, 0.05), 0.25, config.exabgp.stall / 2)
    return period, min(max(5 * interval, 1.0), 2.0)


EXABGP_ENV = {
    "exabgp_daemon_daemonize": "false",
    # Never change user: the kernel clears PR_SET_PDEATHSIG when a process does, and that signal is
    # what takes ExaBGP down with a SIGKILLed anycastd. ExaBGP, run as root, always switches to
    # exabgp.daemon.user, so that is whoever runs anycastd: under packaging/systemd, the unprivileged
    # user anycastd with CAP_NET_ADMIN alone (docs/security.md), and ExaBGP then changes nothing.
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_user": own_user(),
    "exabgp_daemon_pid": "",
    "exabgp_api_ack": "true",
    "exabgp_api_respawn": "false",  # a dead helper means a dead controller: do not hide it
    "exabgp_api_cli": "false",
    "exabgp_tcp_bind": "",  # connect out only; never listen on port 179
    "exabgp_log_destination": "stdout",
    "exabgp_log_statistics": "false",
    # ExaBGP's reactor polls every speed / 100 s when idle (10 ms by default: 0.7 % of a core here).
    # Our commands and the router's messages wake it at once whatever the speed, so idling 100 ms
    # costs no latency; only its own timers (keepalives, every hold time / 3) may run 100 ms late.
    "exabgp_reactor_speed": "10.0",
}


class AckTimeout(AnnounceError):
    """ExaBGP stopped acknowledging commands."""


class _Helper:
    """One connection from ExaBGP's helper: commands out, acks and events in."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        process: asyncio.subprocess.Process | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        #: The ExaBGP this helper belongs to: the one running when it connected.
        self.process = process
        self.pid = peer_of(writer).pid or None  # the helper, as the kernel says (SO_PEERCRED)
        self.pending: collections.deque[asyncio.Future[bool]] = collections.deque()
        #: What this ExaBGP has acknowledged announcing: each prefix with its communities.
        self.sent: dict[IPNetwork, RouteAttributes] = {}
        self.closed = False
        self.killed = False  # anycastd killed this pair on purpose

    async def command(self, line: str, timeout: float = ACK_TIMEOUT) -> bool:
        future = self.post(line)
        try:
            # One deadline for the whole exchange: a stopped helper stops reading, and then
            # even the write (drain) waits forever.
            async with asyncio.timeout(timeout):
                await self.writer.drain()
                return await future
        except TimeoutError:
            raise AckTimeout(f"ExaBGP did not acknowledge '{line}' within {timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise AnnounceError(f"lost ExaBGP while sending '{line}': {exc}") from None

    def post(self, line: str, before: bytes = b"") -> asyncio.Future[bool]:
        """Write ``before`` (lines the helper keeps) and ``line`` at once; the future of ``line``'s
        acknowledgement, not awaited here (the heartbeat, whose deadlines its sender keeps)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        self.writer.write(before + line.encode() + b"\n")
        return future

    def acknowledge(self, ok: bool) -> None:
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_result(ok)
                return

    def fail_pending(self) -> None:
        self.closed = True
        for future in self.pending:
            if not future.done():
                future.set_exception(ConnectionError("ExaBGP went away"))
        self.pending.clear()


class ExaBGPAnnouncer:
    def __init__(
        self,
        config: Config,
        alive: Callable[[], bool] = lambda: True,
        *,
        restart_wait: tenacity.wait.wait_base | None = None,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.ack_timeout = ack_timeout
        self.config = config
        self.alive = alive
        self.runtime_dir = config.runtime_dir
        self.socket_path = self.runtime_dir / "exabgp.sock"
        self.config_path = self.runtime_dir / "exabgp.conf"
        self._desired: dict[str, tuple[tuple[IPNetwork, ...], RouteAttributes]] = {}
        self._dirty = False  # wanted since the last flush: something to send
        self._helper: _Helper | None = None
        self._lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._sessions: dict[str, str] = {str(n.address): "down" for n in config.neighbors}
        self._restart_wait = restart_wait or tenacity.wait_exponential(multiplier=0.25, max=10)
        self.connected = asyncio.Event()
        self.restarts = 0
        self.heartbeat_period, self.answer_bound = heartbeat_bounds(config)
        #: What status and metrics show (anycastd.core.supervision).
        self.state = ChildState.STARTING
        #: Wall-clock time of ExaBGP's last answer to anything, and why it was last killed or lost.
        self.last_answer: float | None = None
        self.last_problem: str | None = None
        #: Called when a BGP session's state changes (the return path follows them: anycastd.announce.return_path).
        self.on_session_change: Callable[[], None] = lambda: None
        #: The neighbors held back by flap damping of their BFD sessions (anycastd.announce.flaps): nothing
        #: announced to them.
        self.held: set[str] = set()

    # public ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            self.runtime_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            tmp = self.config_path.with_suffix(".tmp")
            tmp.touch(mode=0o600)  # it may hold MD5 passwords; the directory may be open to control.group
            tmp.chmod(0o600)
            tmp.write_text(render_config(self.config, self.socket_path))
            os.replace(tmp, self.config_path)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            self._server = await asyncio.start_unix_server(self._on_helper, path=str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
        except OSError as exc:
            raise AnnounceError(f"cannot prepare ExaBGP in {self.runtime_dir}: {exc}") from None
        self._spawn(self._supervise())

    async def set_announced(
        self, service: str, prefixes: Sequence[IPNetwork], announced: bool, attributes: RouteAttributes = PLAIN
    ) -> None:
        self.want(service, prefixes, announced, attributes)
        await self.flush()

    def want(
        self, service: str, prefixes: Sequence[IPNetwork], announced: bool, attributes: RouteAttributes = PLAIN
    ) -> None:
        before = self._desired.get(service)
        if announced:
            try:
                route_words(attributes, 1)  # every value checked again here: these words reach ExaBGP's API
            except ValueError as exc:
                raise AnnounceError(f"{service}: {exc}") from None
            self._desired[service] = (tuple(prefixes), attributes)
        else:
            self._desired.pop(service, None)
        self._dirty = self._dirty or self._desired.get(service) != before

    async def flush(self) -> None:
        """Send what was wanted since the last flush; nothing to do (most probe rounds) costs nothing."""
        if not self._dirty:
            return
        self._dirty = False
        try:
            await self._reconcile()
        except BaseException:
            self._dirty = True  # the next flush tries again
            raise

    async def close(self) -> None:
        self._closing = True
        self._desired.clear()
        with contextlib.suppress(AnnounceError):
            await asyncio.wait_for(self._reconcile(), 2.0)
        await self._stop_process()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._set_state(ChildState.STOPPED)

    def sessions(self) -> dict[str, str]:
        return dict(self._sessions)

    def announced_prefixes(self) -> frozenset[IPNetwork]:
        helper = self._helper
        if helper is None or self.state is not ChildState.UP:
            return frozenset()  # an ExaBGP that does not answer cannot be said to announce anything
        return frozenset(helper.sent)

    def announced_routes(self) -> dict[IPNetwork, RouteAttributes]:
        """What ExaBGP has confirmed it announces, each prefix with its attributes."""
        helper = self._helper
        if helper is None or self.state is not ChildState.UP:
            return {}
        return dict(helper.sent)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "exabgp",
            "pid": self.pid,
            "state": str(self.state),
            "last_answer": iso(self.last_answer) if self.last_answer is not None else None,
            "answer_bound": self.answer_bound,
            "problem": self.last_problem,
            "restarts": self.restarts,
            "connected": self._helper is not None,
        }

    def _set_state(self, state: ChildState) -> None:
        self.state = moved("ExaBGP", self.state, state)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    # internals ------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _command(self) -> list[str]:
        base = list(self.config.exabgp.command or (sys.executable, "-m", "anycastd.announce.exabgp_run"))
        return [*base, str(self.config_path)]

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closing:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self._command(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**os.environ, **EXABGP_ENV},
                    preexec_fn=die_with_parent,
                    start_new_session=True,  # a Ctrl-C meant for anycastd must not reach ExaBGP first
                )
            except OSError as exc:
                log.error("cannot start ExaBGP (%s): %s", " ".join(self._command()), exc)
                code: int | None = None
                tail: collections.deque[str] = collections.deque()
            else:
                log.info("started ExaBGP (pid %d)", self._process.pid)
                self._set_state(ChildState.STARTING)
                tail = collections.deque(maxlen=15)
                assert self._process.stdout is not None
                async for raw in self._process.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    tail.append(line)
                    level, fmt, text = relay(line)
                    if self._closing:  # "SIGTERM received" is CRITICAL to ExaBGP; here it was asked for
                        level = min(level, logging.DEBUG)
                    exabgp_log.log(level, fmt, text)
                code = await self._process.wait()
            if self._closing:
                return
            self._set_state(ChildState.RESTARTING)
            self.restarts += 1
            if loop.time() - started > 30:
                attempt = 0
            attempt += 1
            delay = self._delay(attempt)
            log.warning(
                "ExaBGP exited (%s); its sessions are closed. Restarting it in %.2f s. Its last words:\n  %s",
                child.exit_text(code),
                delay,
                "\n  ".join(tail) or "(none)",
            )
            await asyncio.sleep(delay)

    def _delay(self, attempt: int) -> float:
        return child.restart_delay(self._restart_wait, attempt)

    def _kill(self, helper: _Helper | None = None) -> None:
        """SIGKILL ExaBGP (the one ``helper`` belongs to, else the current one) and that helper.

        SIGKILL also ends a stopped process, and the kernel closes its BGP sessions at once.
        """
        proc = helper.process if helper is not None else self._process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if helper is not None:
            helper.killed = True
            if helper.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(helper.pid, signal.SIGKILL)

    async def _stop_process(self) -> None:
        await child.stop(self._process, "ExaBGP")

    async def _on_helper(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._helper is not None:
            self._helper.fail_pending()
            self._helper.writer.close()
        helper = _Helper(reader, writer, self._process)
        self._helper = helper
        for address in self._sessions:
            self._sessions[address] = "down"
        self.on_session_change()
        log.info("ExaBGP's helper connected (pid %s)", helper.pid)
        self._spawn(self._pulse(helper))
        self.connected.set()
        reconcile = asyncio.ensure_future(self._reconcile())
        try:
            async for raw in reader:
                self._event(helper, raw.decode(errors="replace").strip())
        except (ConnectionError, OSError):
            pass
        finally:
            helper.fail_pending()
            if self._helper is helper:
                self._helper = None
                self.connected.clear()
                for address in self._sessions:
                    self._sessions[address] = "down"
                self.on_session_change()
            if not self._closing and not helper.killed:
                # ExaBGP runs on when its API process dies (it is not respawned): it would keep
                # announcing with nothing in control. Kill it; the supervisor starts a fresh one.
                self.last_problem = "ExaBGP's helper went away"
                log.error(
                    "ExaBGP's helper disconnected; killing ExaBGP (pid %s) so nothing stays announced without "
                    "control, and starting it again",
                    helper.process.pid if helper.process else "-",
                )
                self._kill(helper)
            writer.close()
            with contextlib.suppress(AnnounceError):
                await reconcile

    def _event(self, helper: _Helper, line: str) -> None:
        self.last_answer = time.time()
        event = parse_event(line)
        if isinstance(event, Ack):
            helper.acknowledge(event.ok)
        elif isinstance(event, SessionEvent):
            old = self._sessions.get(event.neighbor)
            self._sessions[event.neighbor] = event.state
            if old != event.state:
                level = logging.WARNING if old == "up" and not self._closing else logging.INFO
                log.log(level, "BGP session with %s: %s -> %s%s", event.neighbor, old, event.state, event)
                self.on_session_change()
        elif line and not line.startswith("shutdown"):
            log.debug("from ExaBGP: %s", line)

    async def _pulse(self, helper: _Helper) -> None:
        """Both heartbeats, in one wake-up every ``heartbeat_period`` (and one write):

        * the helper's (``HEARTBEAT``), only while every probe loop beats: its dead man's switch on
          anycastd (anycastd.announce.exabgp_helper);
        * ExaBGP's: a heartbeat command through ExaBGP once the last one is answered. One unanswered
          for two periods makes ExaBGP ``unresponsive``; for ``exabgp.stall`` while neither ExaBGP nor
          its helper is running or waiting for a CPU, or for the answer bound whatever they are doing,
          gets ExaBGP killed.

        The first answer may take longer (``ack_timeout``), and is not judged by the stall bound:
        ExaBGP starts its helper before it has finished reading its configuration.
        """
        loop = asyncio.get_running_loop()
        period, stall = self.heartbeat_period, self.config.exabgp.stall
        bound = max(self.ack_timeout, self.answer_bound)
        first, warned = True, False
        answer: asyncio.Future[bool] | None = None
        sent = loop.time()
        while not helper.closed:
            beat = b""
            if self.alive():
                beat, warned = exabgp_helper.HEARTBEAT + b"\n", False
            elif not warned:
                log.error("a probe loop has stopped making progress; no heartbeat, ExaBGP will withdraw")
                warned = True
            if answer is not None and answer.done():
                if answer.exception() is not None:
                    return  # the helper went away; _on_helper deals with it
                answer, bound, first = None, self.answer_bound, False
            if answer is None:
                answer, sent = helper.post(HEARTBEAT_COMMAND, beat), loop.time()
                answer.add_done_callback(functools.partial(self._answered, helper))
            else:
                if beat:
                    helper.writer.write(beat)
                if await self._unanswered(helper, answer, loop.time() - sent, bound, first):
                    return
            wait = period
            if not first and not answer.done():  # wake at the stall bound, should it come first
                wait = min(wait, max(sent + stall - loop.time(), 0.001))
            await asyncio.sleep(wait)

    def _answered(self, helper: _Helper, answer: asyncio.Future[bool]) -> None:
        """ExaBGP answered a heartbeat: it is up (unless that was an exited ExaBGP's last answer)."""
        answered = not answer.cancelled() and answer.exception() is None
        if answered and helper is self._helper and may(self.state, ChildState.UP):
            self._set_state(ChildState.UP)

    async def _unanswered(
        self, helper: _Helper, answer: asyncio.Future[bool], age: float, bound: float, first: bool
    ) -> bool:
        """ExaBGP's heartbeat has waited ``age`` for its answer: True if ExaBGP was killed (for it, or for a
        command that went unanswered meanwhile)."""
        if helper.killed:
            return True
        if age >= 2 * self.heartbeat_period and may(self.state, ChildState.UNRESPONSIVE):
            self._set_state(ChildState.UNRESPONSIVE)
        if age >= bound:
            self._give_up(helper, f"ExaBGP answered no heartbeat within {bound:g} s")
            return True
        if first or age < self.config.exabgp.stall:
            return False
        pids = [helper.process.pid if helper.process else 0, helper.pid or 0]
        # Judged in a thread: the loop meanwhile reads an answer that came while it was busy.
        stuck = await asyncio.to_thread(exabgp_helper.judge, pids)
        if stuck and not answer.done() and not helper.killed:  # not killed meanwhile, for a command unanswered
            states = ", ".join(exabgp_helper.states(pids))
            self._give_up(
                helper,
                f"ExaBGP answered no heartbeat within {self.config.exabgp.stall:g} s, and neither it nor its "
                f"helper is running (states {states})",
            )
            return True
        return False

    def _give_up(self, helper: _Helper, problem: str) -> None:
        self.last_problem = problem
        log.error(
            "%s; killing it (pid %s) so its BGP sessions close and the router drops this server's paths, "
            "then starting it again",
            problem,
            helper.process.pid if helper.process else "-",
        )
        self._kill(helper)

    async def _reconcile(self) -> None:
        async with self._lock:
            helper = self._helper
            if helper is None:
                return
            want = {p: attributes for prefixes, attributes in self._desired.values() for p in prefixes}
            neighbors = [n.address for n in self.config.neighbors]
            changes = route_changes(helper.sent, want, neighbors, self.held, self.config.local_asn)
            for commands, group in batched(changes, neighbors, self.held):
                for command in commands:
                    await self._send(helper, command)
                for change in group:
                    if change.announced:
                        helper.sent[change.prefix] = change.attributes
                    else:
                        helper.sent.pop(change.prefix, None)
                    log.info("%s", change)

    async def _send(self, helper: _Helper, line: str) -> None:
        try:
            ok = await helper.command(line, self.ack_timeout)
        except AckTimeout:
            # A wedged ExaBGP may be holding routes we can no longer withdraw:
            # kill it, so its sessions close now and a fresh one is started.
            log.error("ExaBGP stopped answering; killing it so its sessions close")
            self.last_problem = f"ExaBGP did not acknowledge '{line}'"
            self._kill(helper)
            raise
        if not ok:
            raise AnnounceError(f"ExaBGP answered 'error' to '{line}'")

    async def hold(self, neighbor: str, held: bool) -> None:
        """Hold ``neighbor`` back (withdraw every prefix from it alone, announce nothing to it) or release it
        (announce to it what the others have): BFD's flaps through flap damping (anycastd.announce.flaps)."""
        if held == (neighbor in self.held):
            return
        (self.held.add if held else self.held.discard)(neighbor)
        address = next(n.address for n in self.config.neighbors if str(n.address) == neighbor)
        async with self._lock:
            helper = self._helper
            if helper is None:
                return  # a new helper starts from nothing and announces to the neighbors not held
            for command in hold_commands(helper.sent, address, held, self.config.local_asn):
                await self._send(helper, command)
        log.warning("%s %s: %s", "held back" if held else "released", neighbor, "withdrew" if held else "announced")
