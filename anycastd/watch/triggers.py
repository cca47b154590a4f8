"""Which probes an event wakes, and when the resolver's receive queues are sampled.

Theory of operation
-------------------
The sidecar's probes run on a schedule; what the kernel says (anycastd.watch.sockdiag) can
bring one forward. ``SocketWatch`` maps the kernel's word to the probes it concerns: a
destroyed socket wakes every probe that reaches it, a receive queue that is not shrinking
*hurries* the probes whose clients it holds (``Probe.hurry``: the queries already wait, so
the probe waits only a confirming probe's timeout), at most once per ``check.timeout``, and
the same queue found empty again (the resolver thawed) *resumes* them (``Probe.resume``: a
probe whose last one failed, and none is in flight, runs at once instead of on its schedule;
a probe in flight gets its answer now anyway). The verdict still comes from the probes, never
from the event: a resumed probe only comes sooner, and the rise still takes ``rise`` passes an
interval apart (anycastd.daemons.skeleton).

When the queues are sampled is ``Cadence``, a pure function of the clock and of what the
last sample found: while every queue is empty, about every ``idle`` seconds, by a probe round
when one comes (the daemon is awake then anyway) or else by a timer; while one holds a query,
every ``busy`` seconds, by the timer. A queue that sticks is then seen within
``1.05 idle + busy``, and with probes every ``idle`` seconds an idle daemon is woken by
nothing more than its probes. The timer is the event loop's ``call_later`` (a fake one in
the tests), so that the policy is tested on a fake clock.

Where sock_diag cannot be set up (no permission, an old kernel), every probe polls and its
status says why; ``Polling`` is the same for the router side, whose resolvers are on other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

from anycastd.config.checks import Check
from anycastd.core.net import IPAddress
from anycastd.watch.sockdiag import DiagError, Endpoint, Watcher

log = logging.getLogger(__name__)

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


class Watched(Protocol):
    """A probe as the triggers see it (anycastd.daemons.skeleton.Probe, or a SharedProbe of several)."""

    key: str
    check: Check
    wake: asyncio.Event | None
    urgent: bool

    @property
    def service_addresses(self) -> tuple[IPAddress, ...]: ...

    def hurry(self) -> None: ...

    def resume(self) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


#: Runs a callback after a delay: the event loop's ``call_later``, or a fake clock's.
CallLater = Callable[[float, Callable[[], None]], Timer]


class Cadence:
    """When the receive queues are sampled: a pure function of the clock and the last sample's finding."""

    def __init__(self, idle: float = SAMPLE_IDLE, busy: float = SAMPLE_BUSY) -> None:
        self.idle, self.busy = idle, busy
        self.sampled_at = -1e9
        self.busy_now = False  # a queue held a query at the last sample: the timer samples every ``busy``

    def round_samples(self, now: float) -> bool:
        """A probe round is about to run at ``now``: does it take the sample (rather than the timer)?

        Only while every queue is empty, and once about ``idle`` has gone by: a probe interval a
        little shorter than ``idle`` (a schedule's jitter) still samples every round."""
        return not self.busy_now and now - self.sampled_at >= self.idle * 0.9

    def sampled(self, now: float, holding: bool) -> float:
        """A sample was taken at ``now`` (``holding``: a queue held a query); the delay until the timer's next."""
        self.sampled_at, self.busy_now = now, holding
        return self.busy if holding else self.idle * 1.05

    @staticmethod
    def wakes(last_woken: float | None, now: float, check: Check) -> bool:
        """A stuck queue wakes its probe at most once per ``check.timeout``."""
        return last_woken is None or now - last_woken >= check.timeout


def queues_of(check: Check, service_addresses: Iterable[IPAddress]) -> tuple[Endpoint, ...]:
    """The sockets whose receive queue can show a frozen resolver before the probe does: those the
    clients' queries reach, the service addresses'. Only the probes go to the admin address, and a
    probe waiting there says nothing its own timeout does not; it is watched only without a service
    address. Probed or not, a service address's socket holds the clients' queries."""
    service = [a for a in service_addresses if a != check.address]
    if not check.datagram:
        return ()
    return tuple(Endpoint(a, check.port, socket.IPPROTO_UDP) for a in service or [check.address])


def endpoints_of(check: Check, service_addresses: Iterable[IPAddress]) -> tuple[Endpoint, ...]:
    """The resolver's sockets a probe of ``check`` reaches: its address and, if it probes them, the service's."""
    if check.kind == "command":
        return ()  # whatever the program looks at, anycastd cannot see
    protocol = socket.IPPROTO_UDP if check.kind == "zone" or check.transport == "udp" else socket.IPPROTO_TCP
    addresses = [check.address]
    if check.probe_service_addresses:
        addresses += [a for a in service_addresses if a != check.address]
    return tuple(Endpoint(a, check.port, protocol) for a in addresses)


class Triggers(Protocol):
    """Wakes probes when something suggests their resolver changed; says how each probe is watched."""

    def watch(self, probe: Watched) -> tuple[str, str | None]:
        """Start watching for ``probe``: (the detection method, why only polling if so)."""
        ...

    def forget(self, probe: Watched) -> None: ...

    def tick(self) -> None:
        """A probe is about to run: the daemon is awake anyway."""
        ...

    def close(self) -> None: ...


class Polling:
    """No events: the probes' schedule alone (the router side, whose resolvers are on other hosts)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def watch(self, probe: Watched) -> tuple[str, str | None]:
        return "polling", self.why

    def forget(self, probe: Watched) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class SocketWatch:
    """The sidecar's triggers: sock_diag events and receive-queue samples wake the probes they concern
    (see the module's docstring)."""

    def __init__(
        self,
        clock: Callable[[], float],
        idle: float = SAMPLE_IDLE,
        busy: float = SAMPLE_BUSY,
        make: Callable[[], Watcher] = Watcher,
        call_later: CallLater | None = None,
    ) -> None:
        self.clock = clock
        self.cadence = Cadence(idle, busy)
        self.make = make
        self.call_later = call_later
        self.watcher: Watcher | None = None
        self.problem: str | None = None
        self.probes: dict[str, tuple[Watched, tuple[Endpoint, ...]]] = {}  # by Probe.key
        self.queues: dict[str, tuple[Endpoint, ...]] = {}  # the sockets sampled for each probe
        self._woken_at: dict[str, float] = {}
        self._timer: Timer | None = None  # the next sample, should no probe round come first

    def watch(self, probe: Watched) -> tuple[str, str | None]:
        if not endpoints_of(probe.check, probe.service_addresses):
            return "polling", "a command check's program is not a socket anycastd can watch"
        if self.watcher is None and self.problem is None:
            try:
                self.watcher = self.make()
            except DiagError as exc:
                self.problem = str(exc)
                log.warning("%s; failures are found by polling alone", exc)
            else:
                loop = asyncio.get_running_loop()
                loop.add_reader(self.watcher.fileno(), self.on_events)
                self.call_later = self.call_later or loop.call_later
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

    def forget(self, probe: Watched) -> None:
        self.probes.pop(probe.key, None)
        self.queues.pop(probe.key, None)
        self._woken_at.pop(probe.key, None)

    def _all(self) -> set[Endpoint]:
        return {e for _, endpoints in self.probes.values() for e in endpoints}

    def on_events(self) -> None:
        """The watcher's socket is readable: wake the probes that reach a destroyed socket."""
        assert self.watcher is not None
        gone = self.watcher.destroyed(self._all())
        for probe, endpoints in self.probes.values():
            if gone.intersection(endpoints):
                log.debug("%s: the resolver's socket was destroyed: probing now", probe.key)
                assert probe.wake is not None
                probe.wake.set()

    def tick(self) -> None:
        if self.watcher is not None and self.cadence.round_samples(self.clock()):
            self.sample()

    def sample(self) -> None:
        """Sample the receive queues, hurry the probes whose clients' queries are stuck, set the timer."""
        assert self.watcher is not None and self.call_later is not None
        if self._timer is not None:
            self._timer.cancel()
        started = self.clock()
        found = self.watcher.sample({e for queues in self.queues.values() for e in queues})
        stuck, resumed = set(found.stuck), set(found.resumed)
        now = self.clock()
        for probe, _ in self.probes.values():
            if Cadence.wakes(self._woken_at.get(probe.key), now, probe.check) and stuck.intersection(
                self.queues[probe.key]
            ):
                log.debug("%s: the resolver's receive queue is not shrinking: probing now", probe.key)
                self._woken_at[probe.key] = now
                probe.hurry()
            elif resumed.intersection(self.queues[probe.key]):
                log.debug("%s: the resolver's receive queue, stuck before, is empty again", probe.key)
                probe.resume()
        self._timer = self.call_later(self.cadence.sampled(started, self.watcher.holding), self.sample)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.watcher is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self.watcher.fileno())
            self.watcher.close()
            self.watcher = None
