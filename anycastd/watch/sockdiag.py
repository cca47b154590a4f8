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
that stayed non-empty without shrinking between two samples, and, once such
a queue is found empty again, that the resolver has *resumed* reading it.

This module is the kernel's side only: the netlink codec, the BPF filter that
lets only watched listeners' destruction through, and ``Watcher``, the socket
(no asyncio). Which probe an event wakes, and when the queues are sampled, is
anycastd.watch.triggers.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from anycastd.core.net import IPAddress

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

    #: hashed once: a sample keys its bookkeeping by endpoint, several times an endpoint, and an address hashes slowly
    _hash: int = field(init=False, repr=False, compare=False)
    #: the body of the sock_diag request that looks up this endpoint's socket (``lookup_request``)
    _request: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.address, self.port, self.protocol)))
        object.__setattr__(self, "_request", _lookup_body(self))

    def __hash__(self) -> int:
        return self._hash

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


class Listeners:
    """Endpoints by protocol, port and family, to find the ones a socket served in one step each: a resolver
    killed on 200 addresses reports some 600 listeners gone, and comparing each with every endpoint took
    tens of milliseconds of the kill's detection."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._by: dict[tuple[int, int, int], dict[IPAddress, Endpoint]] = {}
        for e in endpoints:
            self._by.setdefault((e.protocol, e.port, e.address.version), {})[e.address] = e

    def served_by(self, info: SocketInfo) -> Iterable[Endpoint]:
        """The endpoints a query to which ``info`` could receive: it listens (no peer) on the endpoint's
        protocol and port, on its address or on every address of its family."""
        if info.remote_port != 0:
            return ()
        found = self._by.get((info.protocol, info.port, info.local.version), {})
        if info.local.is_unspecified:
            return found.values()
        one = found.get(info.local)
        return (one,) if one is not None else ()


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


def _lookup_body(endpoint: Endpoint) -> bytes:
    sender = _packed(endpoint.address)  # any sender: a listening socket does not look at it
    sockid = _SOCKID.pack(1, endpoint.port, sender, _packed(endpoint.address), 0, NOCOOKIE, NOCOOKIE)
    return _REQ.pack(endpoint.family, endpoint.protocol, 0, 0xFFFFFFFF) + sockid


def lookup_request(endpoint: Endpoint, seq: int) -> bytes:
    """Ask for the one socket a datagram to ``endpoint`` would reach (the kernel's own lookup, not a dump).

    For UDP the kernel reads the request's source as the datagram's sender and its destination as
    the receiver (linux/net/ipv4/udp_diag.c: "src and dst are swapped for historical reasons").
    """
    body = endpoint._request
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


class QueueSample(NamedTuple):
    """What one sample of the receive queues found."""

    stuck: list[Endpoint]  # non-empty, and not shrinking since the sample before: the resolver stopped reading
    resumed: list[Endpoint]  # empty again after having been stuck: it reads again


class Watcher:
    """Two netlink sockets: one subscribed to every socket destruction, one for lookups.

    ``destroyed`` reads the events the kernel queued (non-blocking) and returns those of watched
    endpoints. ``sample`` looks up each endpoint's socket: the queues that have stayed non-empty
    without shrinking since the previous sample (a resolver that stopped reading), and those found
    empty again after that (it reads again).
    """

    def __init__(self) -> None:
        self._queues: dict[Endpoint, int] = {}
        self._stuck: set[Endpoint] = set()  # reported stuck, not seen empty since
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
        listeners = Listeners(endpoints)
        while True:
            try:
                data = self.events.recv(65536)
            except BlockingIOError:
                return gone
            except OSError as exc:  # ENOBUFS: events were lost, so any of them may have gone
                log.debug("sock_diag events lost: %s", exc)
                return set(endpoints)
            for info in _events(data):
                gone.update(listeners.served_by(info))

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

    def sample(self, endpoints: Collection[Endpoint]) -> QueueSample:
        """The UDP endpoints whose receive queue stayed non-empty and did not shrink since the last sample,
        and those whose queue, stuck before, is empty now."""
        stuck, resumed = [], []
        self._queues = {e: q for e, q in self._queues.items() if e in endpoints}  # forget the unwatched
        self._stuck &= set(endpoints)
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
                self._stuck.add(endpoint)
            elif queue == 0 and endpoint in self._stuck:
                resumed.append(endpoint)
                self._stuck.discard(endpoint)
        return QueueSample(stuck, resumed)

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
