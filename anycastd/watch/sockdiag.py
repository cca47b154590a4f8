"""Watch the resolver's own sockets through the kernel's sock_diag netlink: events that say "probe now".

Theory of operation
-------------------
A probe learns that a resolver died only when it next runs, up to one
interval later. The kernel knows at once: when the last reference to a
socket goes (the process exited, was killed, or closed it on a reload), it
broadcasts the socket's destruction to sock_diag's multicast groups, within
a millisecond. On this kernel (Linux 6.x) any user may subscribe, and see
the sockets of other users (tests/integration/test_sockdiag_kernel.py); it
works in the daemon's own network namespace, inside ProtectProc=invisible,
and without knowing the resolver's process: the watch is on the address and
port the probe asks, which is exactly what matters.

Why not a pidfd or the proc connector (bench/triggers.py measured all three;
docs/benchmarks.md): both are as fast, but both need the resolver's PID,
which an unprivileged anycastd behind ProtectProc=invisible cannot find, and
a pidfd says nothing when a reload closes the socket. The proc connector
reports every exit on the host and only in the initial network namespace.

A frozen resolver (SIGSTOP, a deadlock) keeps its sockets. Its receive queue
then grows: ``Watcher.sample`` looks up the socket a query to each watched
address would reach (one sock_diag request, not a dump) and reports a queue
that stayed non-empty without shrinking between two samples.

Nothing here judges the resolver. An event only wakes its check's probe
(anycastd.daemons.skeleton); the verdict comes from the probes, as always. Where
the watch cannot be set up (no permission, an old kernel), the daemon keeps
polling and says why in its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from anycastd.config.schema import DnsCheck
from anycastd.core.net import IPAddress

if TYPE_CHECKING:
    from anycastd.daemons.skeleton import Probe

log = logging.getLogger(__name__)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
#: sock_diag's multicast groups (linux/sock_diag.h): destroyed sockets by family and protocol.
GROUPS = {
    (socket.AF_INET, socket.IPPROTO_TCP): 1,
    (socket.AF_INET, socket.IPPROTO_UDP): 2,
    (socket.AF_INET6, socket.IPPROTO_TCP): 3,
    (socket.AF_INET6, socket.IPPROTO_UDP): 4,
}
NOCOOKIE = 0xFFFFFFFF
#: How often the receive queues are sampled while every one is empty. A probe round (``SocketWatch.tick``)
#: samples them when the last sample is at least 0.9 of this old: the daemon is awake anyway. A timer
#: samples them 1.05 of this after the last sample, so that a probe interval longer than this (the
#: default, 0.2 s) still has them sampled this often, and one of this length never wakes for it: a
#: wake-up, not the lookup (about 7 us), is what a sample costs (bench/triggers.py).
SAMPLE_IDLE = 0.1
#: ... and while one holds a query: a queue that has not shrunk by the next sample is stuck.
SAMPLE_BUSY = 0.01
#: The detection method status shows for a watched probe.
METHOD = "sock_diag: socket destroyed, receive queue stuck"

_NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid.
_REQ = struct.Struct("=BBBxI")
# struct inet_diag_sockid: sport, dport (big-endian), src[16], dst[16], if, cookie[2].
_SOCKID = struct.Struct("!HH16s16sIII")
# struct inet_diag_msg: family, state, timer, retrans; sockid; expires, rqueue, wqueue, uid, inode.
_MSG_HEAD = struct.Struct("=BBBB")
_MSG_TAIL = struct.Struct("=IIIII")
MSG_SIZE = _MSG_HEAD.size + _SOCKID.size + _MSG_TAIL.size


# classic BPF (linux/filter.h), to let only listeners' destructions wake the daemon
SO_ATTACH_FILTER = 26
_BPF_LDH_ABS = 0x28  # BPF_LD | BPF_H | BPF_ABS: A = the big-endian 16 bits at k
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: if A == k skip jt, else jf
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: keep k bytes of the message (0: drop it)
_BPF_INSN = struct.Struct("=HBBI")
# where a destruction event holds its ports: nlmsghdr, then inet_diag_msg's 4 bytes, then the sockid
_SPORT_AT = _NLMSGHDR.size + _MSG_HEAD.size
_DPORT_AT = _SPORT_AT + 2


def listener_filter(ports: Collection[int]) -> bytes:
    """A classic BPF program that keeps only the destruction of a socket with no peer (a listener)
    on one of ``ports``. Every probe's own socket (an ephemeral port, connected) is dropped in the
    kernel, so it does not wake the daemon."""
    wanted = sorted(set(ports))
    n = len(wanted)
    program = [
        (_BPF_LDH_ABS, 0, 0, _DPORT_AT),
        (_BPF_JEQ_K, 0, n + 1, 0),  # connected (a peer's port): drop
        (_BPF_LDH_ABS, 0, 0, _SPORT_AT),
    ]
    program += [(_BPF_JEQ_K, n - k, 0, port) for k, port in enumerate(wanted)]  # a match jumps to "keep"
    program += [(_BPF_RET_K, 0, 0, 0), (_BPF_RET_K, 0, 0, 0xFFFFFFFF)]
    return b"".join(_BPF_INSN.pack(*insn) for insn in program)


class DiagError(Exception):
    """sock_diag cannot be used here; the message says why (the daemon then polls)."""


@dataclass(frozen=True)
class Endpoint:
    """A socket a probe reaches: the resolver listening on ``address``:``port`` over ``protocol``."""

    address: IPAddress
    port: int
    protocol: int  # socket.IPPROTO_UDP or socket.IPPROTO_TCP

    @property
    def family(self) -> int:
        return socket.AF_INET if self.address.version == 4 else socket.AF_INET6


@dataclass(frozen=True)
class SocketInfo:
    """What sock_diag says about one socket."""

    family: int
    protocol: int
    local: IPAddress
    port: int
    remote_port: int
    rqueue: int
    inode: int

    def serves(self, endpoint: Endpoint) -> bool:
        """True if this is a listening socket that a query to ``endpoint`` could reach (its address, or any)."""
        return (
            self.protocol == endpoint.protocol
            and self.port == endpoint.port
            and self.remote_port == 0
            and (self.local == endpoint.address or self.local.is_unspecified)
            and self.local.version == endpoint.address.version
        )


def _packed(address: IPAddress) -> bytes:
    return address.packed.ljust(16, b"\0")


def _address(family: int, raw: bytes) -> IPAddress:
    return ipaddress.ip_address(raw[:4] if family == socket.AF_INET else raw)


def parse_messages(data: bytes, protocol: int) -> Iterator[SocketInfo | int]:
    """The sockets in a netlink datagram from sock_diag; an int is an error number the kernel answered."""
    at = 0
    while at + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, at)
        if length < _NLMSGHDR.size or at + length > len(data):
            return  # truncated: what follows cannot be trusted
        body = at + _NLMSGHDR.size
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + 4:
            (error,) = struct.unpack_from("=i", data, body)
            if error:
                yield -error
        elif kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + MSG_SIZE:
            family, _, _, _ = _MSG_HEAD.unpack_from(data, body)
            sport, dport, src, _, _, _, _ = _SOCKID.unpack_from(data, body + _MSG_HEAD.size)
            _, rqueue, _, _, inode = _MSG_TAIL.unpack_from(data, body + _MSG_HEAD.size + _SOCKID.size)
            if family in (socket.AF_INET, socket.AF_INET6):
                yield SocketInfo(family, protocol, _address(family, src), sport, dport, rqueue, inode)
        at += (length + 3) & ~3


def lookup_request(endpoint: Endpoint, seq: int) -> bytes:
    """Ask for the one socket a datagram to ``endpoint`` would reach (the kernel's own lookup, not a dump).

    For UDP the kernel reads the request's source as the datagram's sender and its destination as
    the receiver (linux/net/ipv4/udp_diag.c: "src and dst are swapped for historical reasons").
    """
    sender = _packed(endpoint.address)  # any sender: a listening socket does not look at it
    sockid = _SOCKID.pack(1, endpoint.port, sender, _packed(endpoint.address), 0, NOCOOKIE, NOCOOKIE)
    body = _REQ.pack(endpoint.family, endpoint.protocol, 0, 0xFFFFFFFF) + sockid
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


class Watcher:
    """Two netlink sockets: one subscribed to every socket destruction, one for lookups.

    ``destroyed`` reads the events the kernel queued (non-blocking) and returns those of watched
    endpoints. ``sample`` looks up each endpoint's socket and returns those whose receive queue has
    stayed non-empty without shrinking since the previous sample: a resolver that stopped reading.
    """

    def __init__(self) -> None:
        self._queues: dict[Endpoint, int] = {}
        self._ports: frozenset[int] | None = None
        self._seq = 0
        self.events: socket.socket | None = None
        self.query: socket.socket | None = None
        try:
            self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_SOCK_DIAG)
            self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.events.bind((0, 0))
            for group in GROUPS.values():
                self.events.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            self.query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self.query.settimeout(0.5)
        except OSError as exc:
            self.close()
            why = exc.strerror or str(exc)
            if exc.errno in (errno.EPERM, errno.EACCES):
                why += " (this kernel restricts socket events: give anycastd CAP_NET_ADMIN)"
            raise DiagError(f"sock_diag unavailable: {why}") from None

    def fileno(self) -> int:
        assert self.events is not None
        return self.events.fileno()

    def listen_to(self, ports: Collection[int]) -> None:
        """Let only the destruction of listeners on ``ports`` through (``listener_filter``)."""
        assert self.events is not None
        if frozenset(ports) == self._ports:
            return
        code = listener_filter(ports)
        buffer = ctypes.create_string_buffer(code)
        prog = struct.pack("@HP", len(code) // _BPF_INSN.size, ctypes.addressof(buffer))
        self.events.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        self._ports = frozenset(ports)

    def destroyed(self, endpoints: Collection[Endpoint]) -> set[Endpoint]:
        """The endpoints whose listening socket the kernel has reported destroyed since the last call."""
        assert self.events is not None
        gone: set[Endpoint] = set()
        while True:
            try:
                data = self.events.recv(65536)
            except BlockingIOError:
                return gone
            except OSError as exc:  # ENOBUFS: events were lost, so any of them may have gone
                log.debug("sock_diag events lost: %s", exc)
                return set(endpoints)
            for info in _events(data):
                gone.update(e for e in endpoints if info.serves(e))

    def lookup(self, endpoint: Endpoint) -> SocketInfo | None:
        """The socket that would receive a query to ``endpoint`` now; None if nothing listens there."""
        assert self.query is not None
        self._seq += 1
        self.query.send(lookup_request(endpoint, self._seq))
        data = self.query.recv(65536)
        for item in parse_messages(data, endpoint.protocol):
            return item if isinstance(item, SocketInfo) else None  # an error: ENOENT, no such socket
        return None

    @property
    def holding(self) -> bool:
        """Some queue held a query at the last sample."""
        return any(self._queues.values())

    def sample(self, endpoints: Collection[Endpoint]) -> list[Endpoint]:
        """The UDP endpoints whose receive queue stayed non-empty and did not shrink since the last sample."""
        stuck = []
        self._queues = {e: q for e, q in self._queues.items() if e in endpoints}  # forget the unwatched
        for endpoint in endpoints:
            if endpoint.protocol != socket.IPPROTO_UDP:
                continue
            try:
                info = self.lookup(endpoint)
            except OSError as exc:
                log.debug("sock_diag lookup of %s failed: %s", endpoint.address, exc)
                info = None
            queue = info.rqueue if info is not None else 0
            before = self._queues.get(endpoint, 0)
            self._queues[endpoint] = queue
            if queue > 0 and before > 0 and queue >= before:
                stuck.append(endpoint)
        return stuck

    def close(self) -> None:
        for sock in (self.events, self.query):
            if sock is not None:
                sock.close()
        self.events = self.query = None


def _events(data: bytes) -> Iterator[SocketInfo]:
    # A destruction event does not say its protocol (recv does not say which group it came from), so
    # each is offered as both; ``serves`` then compares the port and address the probe uses.
    for item in parse_messages(data, socket.IPPROTO_UDP):
        if isinstance(item, SocketInfo):
            yield item
            yield SocketInfo(item.family, socket.IPPROTO_TCP, item.local, item.port, item.remote_port, 0, item.inode)


def queues_of(check: DnsCheck, service_addresses: Iterable[IPAddress]) -> tuple[Endpoint, ...]:
    """The sockets whose receive queue can show a frozen resolver before the probe does: those the
    clients' queries reach, the service addresses'. Only the probes go to the admin address, and a
    probe waiting there says nothing its own timeout does not; it is watched only without a service
    address. Probed or not, a service address's socket holds the clients' queries."""
    service = [a for a in service_addresses if a != check.address]
    if check.protocol == "tcp":
        return ()
    return tuple(Endpoint(a, check.port, socket.IPPROTO_UDP) for a in service or [check.address])


def endpoints_of(check: DnsCheck, service_addresses: Iterable[IPAddress]) -> tuple[Endpoint, ...]:
    """The resolver's sockets a probe of ``check`` reaches: its address and, if it probes them, the service's."""
    protocol = socket.IPPROTO_TCP if check.protocol == "tcp" else socket.IPPROTO_UDP
    addresses = [check.address]
    if check.probe_service_addresses:
        addresses += [a for a in service_addresses if a != check.address]
    return tuple(Endpoint(a, check.port, protocol) for a in addresses)


class Triggers(Protocol):
    """Wakes probes when something suggests their resolver changed; says how each probe is watched."""

    def watch(self, probe: Probe) -> tuple[str, str | None]:
        """Start watching for ``probe``: (the detection method, why only polling if so)."""
        ...

    def forget(self, probe: Probe) -> None: ...

    def tick(self) -> None:
        """A probe is about to run: the daemon is awake anyway."""
        ...

    def close(self) -> None: ...


class Polling:
    """No events: the probes' schedule alone (the router side, whose resolvers are on other hosts)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def watch(self, probe: Probe) -> tuple[str, str | None]:
        return "polling", self.why

    def forget(self, probe: Probe) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class SocketWatch:
    """The sidecar's triggers: sock_diag events and receive-queue samples wake the probes they concern.

    The watch opens on the first probe. If sock_diag cannot be used, every probe polls, and its
    status says why. While every queue is empty they are sampled about every ``idle`` seconds,
    by a probe round when one comes (``tick``: the daemon is awake then anyway), else by a timer;
    while one holds a query, every ``busy`` seconds, by the timer. A queue that sticks is then
    seen within ``1.05 idle + busy``, and with probes every ``idle`` seconds an idle daemon is
    woken by nothing more than its probes. A stuck queue wakes a probe at most
    once per ``check.timeout``, and hurries it (``Probe.hurry``): the clients' queries are
    already waiting, so the probe waits only a confirming probe's timeout, and a probe in
    flight that would wait the full one is abandoned for it (anycastd.daemons.skeleton). The verdict
    is still the probes', not a stream of wake-ups.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        idle: float = SAMPLE_IDLE,
        busy: float = SAMPLE_BUSY,
        make: Callable[[], Watcher] = Watcher,
    ) -> None:
        self.clock = clock
        self.idle, self.busy = idle, busy
        self.make = make
        self.watcher: Watcher | None = None
        self.problem: str | None = None
        self.probes: dict[str, tuple[Probe, tuple[Endpoint, ...]]] = {}  # by Probe.key
        self.queues: dict[str, tuple[Endpoint, ...]] = {}  # the sockets sampled for each probe
        self._woken_at: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None  # the next sample, should no probe round come first
        self._busy = False  # a queue held a query at the last sample: the timer samples every ``busy``
        self._sampled_at = -1e9

    def watch(self, probe: Probe) -> tuple[str, str | None]:
        if self.watcher is None and self.problem is None:
            try:
                self.watcher = self.make()
            except DiagError as exc:
                self.problem = str(exc)
                log.warning("%s; failures are found by polling alone", exc)
            else:
                asyncio.get_running_loop().add_reader(self.watcher.fileno(), self._on_events)
        if self.watcher is None:
            return "polling", self.problem
        if probe.wake is None:
            probe.wake = asyncio.Event()
        self.probes[probe.key] = (probe, endpoints_of(probe.check, probe.service_addresses))
        self.queues[probe.key] = queues_of(probe.check, probe.service_addresses)
        try:
            self.watcher.listen_to({e.port for e in self._all()})
        except OSError as exc:  # unfiltered: every socket destroyed wakes the daemon, which still works
            log.warning("sock_diag: cannot filter the events in the kernel (%s); each is filtered here", exc)
        return METHOD, None

    def forget(self, probe: Probe) -> None:
        self.probes.pop(probe.key, None)
        self.queues.pop(probe.key, None)
        self._woken_at.pop(probe.key, None)

    def _all(self) -> set[Endpoint]:
        return {e for _, endpoints in self.probes.values() for e in endpoints}

    def _on_events(self) -> None:
        assert self.watcher is not None
        gone = self.watcher.destroyed(self._all())
        for probe, endpoints in self.probes.values():
            if gone.intersection(endpoints):
                log.debug("%s: the resolver's socket was destroyed: probing now", probe.key)
                assert probe.wake is not None
                probe.wake.set()

    def tick(self) -> None:
        # a probe interval a little shorter than ``idle`` (a schedule's jitter) still samples every round
        idle_again = self.clock() - self._sampled_at >= self.idle * 0.9
        if self.watcher is not None and not self._busy and idle_again:
            self._sample()

    def _sample(self) -> None:
        assert self.watcher is not None
        if self._timer is not None:
            self._timer.cancel()
        self._sampled_at = self.clock()
        stuck = set(self.watcher.sample({e for queues in self.queues.values() for e in queues}))
        now = self.clock()
        for probe, _ in self.probes.values():
            due = now - self._woken_at.get(probe.key, -1e9) >= probe.check.timeout
            if due and stuck.intersection(self.queues[probe.key]):
                log.debug("%s: the resolver's receive queue is not shrinking: probing now", probe.key)
                self._woken_at[probe.key] = now
                probe.hurry()
        self._busy = self.watcher.holding
        every = self.busy if self._busy else self.idle * 1.05
        self._timer = asyncio.get_running_loop().call_later(every, self._sample)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.watcher is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self.watcher.fileno())
            self.watcher.close()
            self.watcher = None
