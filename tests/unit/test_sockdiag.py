"""sock_diag: the kernel's messages read back, and the watch waking exactly the probes an event concerns."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Callable, Collection

import pytest

from anycastd.checks.dns import ProbeResult
from anycastd.config.checks import Check
from anycastd.core.health import Outcome, ServiceHealth, Thresholds
from anycastd.daemons.skeleton import Probe
from anycastd.daemons.status import CheckStatus
from anycastd.watch.sockdiag import (
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    DiagError,
    Endpoint,
    Listeners,
    QueueSample,
    SocketInfo,
    Watcher,
    listener_filter,
    lookup_request,
    parse_messages,
)
from anycastd.watch.triggers import METHOD, Cadence, SocketWatch, endpoints_of, queues_of

UDP, TCP = socket.IPPROTO_UDP, socket.IPPROTO_TCP
A = ipaddress.ip_address("192.0.2.10")
S4 = ipaddress.ip_address("203.0.113.53")
S6 = ipaddress.ip_address("2001:db8::53")
ANY4 = ipaddress.ip_address("0.0.0.0")
B4 = ipaddress.ip_address("203.0.113.54")


def diag_msg(address: str, port: int, rqueue: int = 0, remote_port: int = 0, seq: int = 1) -> bytes:
    """One SOCK_DIAG_BY_FAMILY message as the kernel writes it (linux/inet_diag.h)."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    sockid = struct.pack("!HH16s16sIII", port, remote_port, ip.packed.ljust(16, b"\0"), bytes(16), 0, 7, 0)
    body = struct.pack("=BBBB", family, 7, 0, 0) + sockid + struct.pack("=IIIII", 0, rqueue, 0, 101, 4242)
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, 0, seq, 0) + body


def error_msg(errno: int) -> bytes:
    body = struct.pack("=i", -errno) + bytes(16)
    return struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, 0, 1, 0) + body


def test_a_kernel_message_is_read_into_the_socket_it_describes() -> None:
    data = diag_msg("192.0.2.10", 53, rqueue=2496) + diag_msg("2001:db8::53", 53)
    first, second = parse_messages(data, UDP)
    assert first == SocketInfo(socket.AF_INET, UDP, A, 53, 0, 2496, 4242)
    assert isinstance(second, SocketInfo) and second.local == S6 and second.family == socket.AF_INET6


def test_an_error_is_its_number_and_a_truncated_datagram_ends_the_reading() -> None:
    assert list(parse_messages(error_msg(2), UDP)) == [2]  # ENOENT: nothing listens there
    whole = diag_msg("192.0.2.10", 53)
    assert list(parse_messages(whole[:-1], UDP)) == []
    assert list(parse_messages(whole + whole[:20], UDP)) == list(parse_messages(whole, UDP))
    short_header = struct.pack("=IHHII", 8, SOCK_DIAG_BY_FAMILY, 0, 1, 0)
    assert list(parse_messages(short_header, UDP)) == []


def test_a_lookup_asks_for_the_socket_a_query_to_the_endpoint_reaches() -> None:
    wire = lookup_request(Endpoint(S6, 5353, UDP), seq=9)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", wire)
    assert (length, kind, flags, seq) == (len(wire), SOCK_DIAG_BY_FAMILY, 1, 9)  # a request, not a dump
    family, protocol, _, states = struct.unpack_from("=BBBxI", wire, 16)
    assert (family, protocol, states) == (socket.AF_INET6, UDP, 0xFFFFFFFF)
    _, dport, _, dst, _, cookie0, cookie1 = struct.unpack_from("!HH16s16sIII", wire, 24)
    assert (dport, dst, cookie0, cookie1) == (5353, S6.packed, 0xFFFFFFFF, 0xFFFFFFFF)


WATCHED = [Endpoint(A, 53, UDP), Endpoint(B4, 53, UDP), Endpoint(A, 853, TCP), Endpoint(S6, 53, UDP)]


@pytest.mark.parametrize(
    ("info", "served"),
    [
        (SocketInfo(socket.AF_INET, UDP, A, 53, 0, 0, 1), [WATCHED[0]]),
        (SocketInfo(socket.AF_INET, UDP, ANY4, 53, 0, 0, 1), WATCHED[:2]),  # bound to every address of its family
        (SocketInfo(socket.AF_INET, UDP, S4, 53, 0, 0, 1), []),  # another address
        (SocketInfo(socket.AF_INET, UDP, A, 5353, 0, 0, 1), []),  # another port
        (SocketInfo(socket.AF_INET, UDP, A, 53, 40000, 0, 1), []),  # a connection, not the listener
        (SocketInfo(socket.AF_INET, TCP, A, 53, 0, 0, 1), []),  # the other protocol
        (SocketInfo(socket.AF_INET, TCP, A, 853, 0, 0, 1), [WATCHED[2]]),  # ... on its own port
        (SocketInfo(socket.AF_INET6, UDP, ipaddress.ip_address("::"), 53, 0, 0, 1), [WATCHED[3]]),  # the other family
        (SocketInfo(socket.AF_INET6, UDP, S6, 53, 0, 0, 1), [WATCHED[3]]),
    ],
)
def test_a_socket_serves_an_endpoint_only_as_its_listener(info: SocketInfo, served: list[Endpoint]) -> None:
    assert list(Listeners(WATCHED).served_by(info)) == served


def test_the_queues_sampled_are_those_the_clients_reach() -> None:
    assert queues_of(Check(A), [S4, S6, A]) == (Endpoint(S4, 53, UDP), Endpoint(S6, 53, UDP))
    unprobed = Check(A, probe_service_addresses=False)  # probed or not, they hold the clients' queries
    assert queues_of(unprobed, [S4]) == (Endpoint(S4, 53, UDP),)
    assert queues_of(Check(A), []) == (Endpoint(A, 53, UDP),)  # no service address: the admin one
    assert queues_of(Check(A, transport="tcp"), [S4]) == ()  # a listener's queue is its backlog


def test_a_check_watches_its_address_and_the_service_addresses_it_probes() -> None:
    check = Check(A)
    assert endpoints_of(check, [S4, S6, A]) == (Endpoint(A, 53, UDP), Endpoint(S4, 53, UDP), Endpoint(S6, 53, UDP))
    alone = Check(A, port=5353, transport="tcp", probe_service_addresses=False)
    assert endpoints_of(alone, [S4]) == (Endpoint(A, 5353, TCP),)


def run_bpf(program: bytes, packet: bytes) -> int:
    """The classic BPF instructions listener_filter emits, interpreted: the bytes kept (0: dropped)."""
    insns = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    pc, a = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x28:  # ldh [k], big-endian
            a = int.from_bytes(packet[k : k + 2], "big")
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x06:  # ret #k
            return int(k)
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1


@pytest.mark.parametrize(
    ("packet", "kept"),
    [
        (diag_msg("192.0.2.10", 53), True),  # the resolver's listener
        (diag_msg("::", 853), True),  # a wildcard listener on another watched port
        (diag_msg("192.0.2.10", 5353), False),  # a listener on a port no check reaches
        (diag_msg("192.0.2.10", 40000, remote_port=53), False),  # a probe's own socket, connected to the resolver
        (diag_msg("192.0.2.10", 53, remote_port=40000), False),  # a TCP connection the resolver accepted
    ],
)
def test_the_kernel_keeps_only_the_destruction_of_listeners_on_watched_ports(packet: bytes, kept: bool) -> None:
    assert bool(run_bpf(listener_filter({53, 853}), packet)) is kept


class FakeWatcher(Watcher):
    """The kernel's side, scripted: what was destroyed, which queues are stuck."""

    def __init__(self) -> None:  # no netlink sockets
        self.gone: set[Endpoint] = set()
        self.stuck: list[Endpoint] = []
        self.resumed: list[Endpoint] = []
        self.held = False
        self.ports: set[int] = set()
        self.reader, self.writer = socket.socketpair()
        self.closed = False

    def fileno(self) -> int:
        return self.reader.fileno()

    def listen_to(self, ports: Collection[int]) -> None:
        self.ports = set(ports)

    def fire(self, *gone: Endpoint) -> None:
        self.gone.update(gone)
        self.writer.send(b"!")

    def destroyed(self, endpoints: Collection[Endpoint]) -> set[Endpoint]:
        self.reader.recv(16)
        gone, self.gone = self.gone & set(endpoints), set()
        return gone

    @property
    def holding(self) -> bool:
        return self.held or bool(self.stuck)

    def sample(self, endpoints: Collection[Endpoint]) -> QueueSample:
        resumed, self.resumed = [e for e in self.resumed if e in endpoints], []
        return QueueSample([e for e in self.stuck if e in endpoints], resumed)

    def close(self) -> None:
        self.closed = True
        self.reader.close()
        self.writer.close()


def _probe(key: str, check: Check) -> Probe:
    return Probe(key, 0, check, (S4,), ServiceHealth.create(key, [Thresholds(3, 3, 1)]), CheckStatus())


def test_a_destroyed_socket_wakes_the_probes_that_reach_it_and_no_other() -> None:
    async def go() -> None:
        fake = FakeWatcher()
        now = [0.0]
        watch = SocketWatch(lambda: now[0], idle=3600, busy=3600, make=lambda: fake)
        mine, other = _probe("dns/checks[0]", Check(A)), _probe("dot/checks[0]", Check(A, port=853))
        assert watch.watch(mine) == (METHOD, None) and watch.watch(other) == (METHOD, None)
        assert mine.wake is not None and other.wake is not None
        assert fake.ports == {53, 853}  # the kernel lets through only these listeners' destruction
        fake.fire(Endpoint(S4, 53, UDP))  # the service address's socket: mine probes it too
        await asyncio.wait_for(mine.wake.wait(), 5)
        assert not other.wake.is_set()
        watch.forget(mine)
        mine.wake.clear()
        fake.fire(Endpoint(A, 53, UDP))
        await asyncio.sleep(0.05)
        assert not mine.wake.is_set()  # forgotten
        watch.close()
        assert fake.closed

    asyncio.run(go())


class FakeTimers:
    """The event loop's call_later on a fake clock: nothing runs until the test says the time has come."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[tuple[float, Callable[[], None], FakeTimer]] = []

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay)
        self.pending.append((timer.when, callback, timer))
        return timer

    def next_at(self) -> float:
        """When the one timer set runs (the watch keeps one at a time)."""
        live = [when for when, _, timer in self.pending if not timer.cancelled]
        assert len(live) == 1, live
        return round(live[0] - self.now, 6)

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, running each timer due on the way, at its own time."""
        while True:
            due = sorted((w, i) for i, (w, _, timer) in enumerate(self.pending) if not timer.cancelled and w <= to)
            if not due:
                break
            when, i = due[0]
            _, callback, _ = self.pending.pop(i)
            self.now = when
            callback()
        self.now = to


class FakeTimer:
    def __init__(self, when: float) -> None:
        self.when = when
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_a_stuck_queue_wakes_its_probe_once_per_timeout() -> None:
    async def go() -> list[float]:
        fake, timers = FakeWatcher(), FakeTimers()
        # binary fractions of a second, so that the fake clock adds up exactly
        watch = SocketWatch(timers.clock, idle=0.125, busy=0.0625, make=lambda: fake, call_later=timers.call_later)
        probe = _probe("dns/checks[0]", Check(A, timeout=0.25))
        watch.watch(probe)
        assert probe.wake is not None
        fake.stuck = [Endpoint(S4, 53, UDP)]  # the service address's socket: the clients' queries
        watch.tick()  # a probe round samples; a queue holding queries is then sampled every ``busy``
        woken = []
        for step in range(1, 11):  # 0.625 s of the watch's clock, looked at every busy sample
            if probe.wake.is_set():
                assert probe.urgent  # the clients' queries wait: the probe waits a confirming probe's timeout
                woken.append(timers.now)
                probe.wake.clear()
                probe.urgent = False
            timers.advance(step * 0.0625)
        watch.close()
        return woken

    assert asyncio.run(go()) == [0.0, 0.25, 0.5]


def test_the_cadence_is_a_function_of_the_clock_and_the_last_finding() -> None:
    cadence = Cadence(idle=10.0, busy=1.0)
    assert cadence.round_samples(0.0)  # never sampled
    assert cadence.sampled(0.0, holding=False) == 10.5  # empty: the timer samples 1.05 idle later
    assert not cadence.round_samples(8.9) and cadence.round_samples(9.0)  # a round within 0.9 idle does not
    assert cadence.sampled(9.0, holding=True) == 1.0  # a queue holds a query: every ``busy``, by the timer
    assert not cadence.round_samples(100.0)  # while busy, rounds add nothing
    assert cadence.sampled(10.0, holding=False) == 10.5
    check = Check(A, timeout=0.15)
    assert Cadence.wakes(None, 0.0, check) and not Cadence.wakes(0.0, 0.149, check) and Cadence.wakes(0.0, 0.15, check)


def test_without_sock_diag_every_probe_polls_and_says_why() -> None:
    def refuse() -> Watcher:
        raise DiagError("sock_diag unavailable: Operation not permitted (socket events need CAP_NET_ADMIN)")

    async def go() -> tuple[tuple[str, str | None], Probe]:
        watch = SocketWatch(lambda: 0.0, make=refuse)
        probe = _probe("dns/checks[0]", Check(A))
        said = watch.watch(probe)
        watch.close()
        return said, probe

    (method, why), probe = asyncio.run(go())
    assert method == "polling" and why is not None and "CAP_NET_ADMIN" in why
    assert probe.wake is None


def test_idle_queues_are_sampled_by_probe_rounds_or_a_timer_and_busy_ones_by_the_timer() -> None:
    async def go() -> list[object]:
        fake, timers = FakeWatcher(), FakeTimers()
        samples: list[float] = []

        def sample(endpoints: Collection[Endpoint]) -> QueueSample:
            samples.append(timers.now)
            return QueueSample([], [])

        fake.sample = sample  # type: ignore[method-assign]
        watch = SocketWatch(timers.clock, idle=10.0, busy=1.0, make=lambda: fake, call_later=timers.call_later)
        watch.watch(_probe("dns/checks[0]", Check(A)))
        seen: list[object] = []
        watch.tick()  # a probe round: sampled; all empty: the timer would sample 1.05 idle later
        seen += [list(samples), timers.next_at()]
        timers.advance(5.0)
        watch.tick()  # another round, within 0.9 idle: not sampled again
        seen.append(len(samples))
        timers.advance(9.5)
        fake.held = True
        watch.tick()  # 0.95 idle: this round samples instead of the timer; a queue holds a query
        seen += [len(samples), timers.next_at()]
        watch.tick()  # busy: the timer samples every ``busy``; a probe round adds nothing
        seen.append(len(samples))
        timers.advance(10.5)  # the busy timer fires; still holding
        fake.held = False
        timers.advance(11.5)  # and again: empty now, back to the idle period
        seen += [samples, timers.next_at()]
        watch.close()
        return seen

    assert asyncio.run(go()) == [[0.0], 10.5, 1, 2, 1.0, 2, [0.0, 9.5, 10.5, 11.5], 10.5]


def test_a_watcher_forgets_the_queues_it_no_longer_samples() -> None:
    watcher = Watcher.__new__(Watcher)  # no netlink: the bookkeeping alone
    one, two = Endpoint(S4, 53, UDP), Endpoint(A, 53, UDP)
    watcher._queues = {one: 3, two: 0}
    watcher._stuck = {one}
    watcher.lookup = lambda endpoint: None  # type: ignore[method-assign]  # nothing listens: empty
    assert watcher.holding
    assert watcher.sample([two]) == ([], [])  # one is not sampled: neither stuck nor resumed
    assert not watcher.holding and watcher._queues == {two: 0} and watcher._stuck == set()


def test_a_queue_empty_again_after_it_stuck_resumes_the_probes_it_holds_and_no_other() -> None:
    async def go() -> tuple[bool, bool, bool]:
        fake, timers = FakeWatcher(), FakeTimers()
        watch = SocketWatch(timers.clock, idle=0.125, busy=0.0625, make=lambda: fake, call_later=timers.call_later)
        mine, other = _probe("dns/checks[0]", Check(A)), _probe("dot/checks[0]", Check(A, port=853))
        watch.watch(mine)
        watch.watch(other)
        assert mine.wake is not None and other.wake is not None
        failed = ProbeResult(Outcome.FAIL, "192.0.2.10: timeout", 0.15, "192.0.2.10")
        mine.status.last = other.status.last = failed  # both failing: each would probe again on a resume
        fake.resumed = [Endpoint(S4, 53, UDP)]  # the service address's port 53 queue: mine's, not dot's
        watch.tick()
        woke = mine.wake.is_set(), other.wake.is_set(), mine.urgent
        watch.close()
        return woke

    assert asyncio.run(go()) == (True, False, False)  # woken, not hurried: the resolver reads again


def test_a_watcher_says_once_that_a_stuck_queue_is_empty_again() -> None:
    watcher = Watcher.__new__(Watcher)  # no netlink: the bookkeeping alone
    watcher._queues, watcher._stuck = {}, set()
    one = Endpoint(S4, 53, UDP)
    queues = iter([0, 40, 80, 80, 40, 0, 0, 40, 0])

    def lookup(endpoint: Endpoint) -> SocketInfo:
        return SocketInfo(socket.AF_INET, UDP, S4, 53, 0, next(queues), 1)

    watcher.lookup = lookup  # type: ignore[method-assign]
    found = [watcher.sample([one]) for _ in range(9)]
    assert [f.stuck for f in found] == [[], [], [one], [one], [], [], [], [], []]
    assert [f.resumed for f in found] == [[], [], [], [], [], [one], [], [], []]  # not the 40 -> 0 never stuck
