"""One socket and one timer for every server's UDP probes: the router side's probe engine.

Theory of operation
-------------------
`anycastd router` probes dozens of servers ten times a second. One asyncio
task per check costs several wake-ups of the event loop per probe (the
sleep, the answer, the timeout timer), and the wake-ups are most of the
cost: a bare asyncio prober spends 3.2 % of a core on 32 servers at 10 Hz
(bench/asyncio_floor.py). The engine instead keeps every probe's next
event (due, resend, give up) in one heap and arms one timer for the
earliest; probes due in the same step share its wake-up, and one reader
drains every answer that has arrived when the socket becomes readable.

There is one unconnected socket per address family. Answers are matched
by (server address, port, message id). A resolver that is not running is
reported by an ICMP port unreachable, which an unconnected socket keeps on
its error queue (IP_RECVERR) together with the destination it was sent to:
every probe pending to that address and port fails hard at once, as a
connected socket's ECONNREFUSED does for the sidecar. The same error is
also left pending on the socket, and the socket's next call returns it:
a recvfrom, or a sendto to any destination at all. So an error from
sendto is first taken for an earlier datagram's: the error queue is read
(each error goes to the probes of its own destination) and the send is
tried again; only an error the send meets again is its own.

The schedule, the confirming probes and the verdict are the skeleton's
(``record``, ``next_due``, ``in_doubt``); the wire format and its checks
are anycastd.checks.dns's (``compile_check``, ``fast_accept``,
``classify``), with the same three sends within the timeout. TCP checks
are not the engine's: the router runs those as tasks, as before.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from anycastd.checks.dns import (
    UDP_SENDS,
    Compiled,
    ProbeResult,
    compile_check,
    judge,
    os_failure,
    refused,
    timed_out,
)
from anycastd.core.health import Decision, Outcome
from anycastd.daemons.skeleton import Probe, confirming, in_doubt, next_due, record

log = logging.getLogger(__name__)

OnResult = Callable[[Probe, ProbeResult, Decision], None]

#: Events due within this many seconds of the timer are handled in the same wake-up.
BATCH = 0.0005
_DUE, _RESEND = 0, 1
#: linux/in.h and linux/in6.h: keep ICMP errors on the socket's error queue, with the destination.
IP_RECVERR, IPV6_RECVERR = 11, 25
#: What an ICMP error leaves pending on the socket (net/ipv4/icmp.c's icmp_err_convert, net/ipv6/icmp.c's
#: icmpv6_err_convert), which the socket's next call returns whatever it is: ECONNREFUSED for a port
#: unreachable, the others for unreachable hosts and networks and refused protocols.
PENDING_ERRORS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EACCES,
        errno.ENOPROTOOPT,
        errno.EPROTO,
        errno.EMSGSIZE,
        errno.EOPNOTSUPP,
    }
)
#: Sends of one query: another datagram's error may be pending each time, and the last error is the send's own.
SEND_TRIES = 3


@dataclass(eq=False)
class _Job:
    probe: Probe
    on_result: OnResult
    sock: socket.socket
    full: Compiled
    short: Compiled
    short_timeout: float
    due: float = 0.0  # when the current or next probe was due
    generation: int = 0  # bumped whenever the job moves on: older heap entries are stale
    target: tuple[str, int] = field(default=("", 0))  # the check's address and port, as sendto takes them
    # the probe in flight, if any
    query_id: int | None = None
    timeout: float = 0.0
    started: float = 0.0
    sends: int = 0
    confirming: bool = False
    wire: bytes = b""
    compiled: Compiled | None = None
    known: bytes | None = None  # the last answer that passed, after its id


class EngineError(Exception):
    """The engine stopped: the router treats it as a crashed probe loop."""


class ProbeEngine:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._heap: list[tuple[float, int, int, int, _Job]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._firing = False
        self._pending: dict[tuple[str, int, int], _Job] = {}  # (address, port, id) -> job
        self._sockets: dict[int, socket.socket] = {}
        self._jobs: dict[str, _Job] = {}
        #: Set with the exception if a handler fails: the router's run() waits on it like on a task.
        self.failed: asyncio.Future[None] = self.loop.create_future()
        self.wakeups = 0
        self._epoch = self.loop.time()

    # the probes ---------------------------------------------------------------------------------------------

    def add(self, probe: Probe, on_result: OnResult, first: float) -> None:
        """Probe ``probe.check`` (UDP) ``first`` seconds after the engine started, then on its schedule."""
        check = probe.check
        short = confirming(check)
        sock = self._socket(check.address.version)
        job = _Job(probe, on_result, sock, compile_check(check), compile_check(short), short.timeout)
        job.target = (str(check.address), check.port)
        job.due = self._epoch + first  # from one epoch: probes given the same offset share their wake-ups
        self._jobs[probe.key] = job
        self._push(job.due, _DUE, job)

    def remove(self, probe: Probe) -> None:
        job = self._jobs.pop(probe.key, None)
        if job is not None:
            self._forget(job)
            job.generation += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sock in self._sockets.values():
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        self._jobs.clear()
        self._pending.clear()
        self._heap.clear()

    # the timer ----------------------------------------------------------------------------------------------

    def _push(self, at: float, kind: int, job: _Job) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), kind, job.generation, job))
        if not self._firing and (self._armed is None or at < self._armed):
            self._arm(at)  # while firing, _fire arms once for whatever comes first when it is done

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = at
        self._timer = self.loop.call_at(at, self._guarded, self._fire)

    def _rearm(self) -> None:
        """After answers: drop the stale events on top, so the timer does not wake for a resend not needed."""
        heap = self._heap
        while heap and heap[0][3] != heap[0][4].generation:
            heapq.heappop(heap)
        if heap and heap[0][0] != self._armed:
            self._arm(heap[0][0])
        elif not heap and self._timer is not None:
            self._timer.cancel()
            self._armed = self._timer = None

    def _fire(self) -> None:
        self.wakeups += 1
        self._armed = self._timer = None
        self._firing = True
        heap = self._heap
        try:
            until = self.loop.time() + BATCH
            outbox: list[_Job] = []
            while heap:
                at, _, kind, generation, job = heap[0]
                if generation != job.generation:
                    heapq.heappop(heap)  # stale: answered, rescheduled or removed since
                    continue
                if at > until:
                    break
                heapq.heappop(heap)
                if kind == _DUE:
                    self._start(job)
                elif job.sends == UDP_SENDS:
                    self._finish(job, timed_out(job.target[0], job.timeout))
                    continue
                outbox.append(job)
            self._transmit(outbox)  # every send of this wake-up back to back: the kernel's path stays warm
        finally:
            self._firing = False
        if heap:
            self._arm(heap[0][0])

    def _guarded(self, handler: Callable[[], None]) -> None:
        try:
            handler()
        except Exception as exc:  # a bug: stop the router rather than probe no more while it runs
            log.exception("the probe engine failed")
            if not self.failed.done():
                self.failed.set_exception(EngineError(f"the probe engine failed: {exc!r}"))

    # sending ------------------------------------------------------------------------------------------------

    def _socket(self, version: int) -> socket.socket:
        sock = self._sockets.get(version)
        if sock is None:
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            if version == 4:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            self._sockets[version] = sock
            self.loop.add_reader(sock.fileno(), self._guarded, lambda: self._readable(sock))
        return sock

    def _start(self, job: _Job) -> None:
        """Prepare the probe now due: a confirming one if the check is in doubt; a fresh message id."""
        probe = job.probe
        job.confirming = in_doubt(probe)
        job.compiled = job.short if job.confirming else job.full
        job.timeout = job.short_timeout if job.confirming else probe.check.timeout
        address, port = job.target
        query_id = secrets.randbits(16)
        while (address, port, query_id) in self._pending:
            query_id = secrets.randbits(16)
        job.query_id, job.started, job.sends = query_id, self.loop.time(), 0
        job.wire = query_id.to_bytes(2, "big") + job.compiled.tail
        self._pending[(address, port, query_id)] = job
        job.generation += 1

    def _transmit(self, jobs: list[_Job]) -> None:
        """Send each job's query (again); the next event of each is its next send, or its timeout."""
        failed = []
        for job in jobs:
            error = self._send(job)
            if error is not None:
                failed.append((job, error))
        for job, error in failed:
            if job.query_id is not None:  # not finished meanwhile by an error of its own destination
                self._finish(job, os_failure(error, job.target[0]))
        for job in jobs:
            if job.query_id is not None:
                self._push(job.started + job.timeout / UDP_SENDS * job.sends, _RESEND, job)

    def _send(self, job: _Job) -> OSError | None:
        """Send ``job``'s query; the error that is the send's own, if any (see the module's docstring)."""
        for _ in range(SEND_TRIES):
            if job.query_id is None:
                return None  # an error queued for its own destination finished it
            try:
                job.sock.sendto(job.wire, job.target)
            except BlockingIOError:
                return None  # the socket's buffer is full: as a lost packet, the next send or the timeout follows
            except OSError as exc:
                if exc.errno not in PENDING_ERRORS:
                    return exc
                error = exc
                self._errors(job.sock)  # an earlier datagram's, perhaps: to its own destination, then again
                continue
            job.sends += 1
            return None
        return error

    # receiving ----------------------------------------------------------------------------------------------

    def _readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data, source = sock.recvfrom(4096)
            except BlockingIOError:
                self._rearm()
                return
            except OSError as exc:  # the error a queued ICMP message set; the queue says for whom
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("probe socket: %s", exc)
                self._errors(sock)
                continue
            if len(data) >= 2:
                job = self._pending.get((source[0], source[1], int.from_bytes(data[:2], "big")))
                if job is not None:
                    self._answered(job, data)

    def _errors(self, sock: socket.socket) -> None:
        while True:
            try:
                _, _, _, destination = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not destination:
                continue
            address, port = destination[0], destination[1]
            for key, job in list(self._pending.items()):
                if key[0] == address and key[1] == port:
                    self._finish(job, refused(address))

    def _answered(self, job: _Job, data: bytes) -> None:
        assert job.compiled is not None and job.query_id is not None
        latency = self.loop.time() - job.started
        target = job.target[0]
        if data[2:] == job.known:  # the same answer as last time (only the id differs) needs no parsing
            check = job.probe.check
            result = ProbeResult(Outcome.OK, f"{target}: {check.rcode} in {latency * 1000:.0f} ms", latency, target)
        else:
            result = judge(job.probe.check, job.compiled, job.query_id, data, target=target, latency=latency)
            job.known = data[2:] if result.ok else job.known
        self._finish(job, result)

    def _forget(self, job: _Job) -> None:
        if job.query_id is not None:
            self._pending.pop((job.target[0], job.target[1], job.query_id), None)
            job.query_id = None

    def _finish(self, job: _Job, result: ProbeResult) -> None:
        self._forget(job)
        job.generation += 1
        probe = job.probe
        now = self.loop.time()
        decision = record(probe, result, job.confirming, now)
        job.on_result(probe, result, decision)
        if probe.key in self._jobs:  # on_result may have removed it
            job.due = next_due(probe, job.started, job.due, now)
            self._push(job.due, _DUE, job)
