"""What both daemons are made of: probe loops on a schedule, and the operator's maintenance book.

Theory of operation
-------------------
`anycastd run` (the sidecar) and `anycastd router` differ in what they
probe and in how a verdict reaches the network (ExaBGP, or FRR's static
routes). They share the rest, here:

* ``probe_forever`` runs one check on its schedule for ever: a first delay
  (``jitter``: random on the router, which probes many servers; on the
  sidecar none for its first check and the others spread over the interval,
  anycastd.daemons.sidecar.FirstDelays) so that many checks do not fire in
  step, then one probe
  every ``interval``, measured from when each was *due*, so that the rate does
  not drift; a probe that ran late starts a new schedule instead of bursting
  to catch up. Each result is counted in the check's ``CheckStatus``, fed to
  its ``ServiceHealth``, and handed to the daemon's ``on_result`` with the
  decision. An optional ``beat`` is called every round (the sidecar's
  watchdog), and an optional ``Probe.wake`` event cuts the wait short: an
  event that suggests the resolver changed (its socket destroyed, its queue
  stuck: anycastd.watch.sockdiag) gets a probe at once. The verdict still comes
  from probes, never from the event. A stuck queue also *hurries* the probe
  (``Probe.hurry``): the clients' queries are already waiting unanswered, so
  the next probe waits only a confirming probe's timeout (below), and a probe
  in flight that would wait the full one is abandoned for it (not counted).
  That queue found empty again (the resolver thawed) *resumes* the probe
  (``Probe.resume``): if its last probe failed and no round is running, it
  runs at once rather than when its schedule says, so a thawed resolver's
  first pass comes within a sample (10 ms) instead of up to an interval
  later. A round running then gets its answer anyway, so it is left alone:
  a resumed probe never adds a pass, and the rise still takes ``rise``
  passes an interval apart.
* A failing check (FALLING after its last result) is *confirmed* rather
  than left to its schedule: the next probe is due ``CONFIRM_GAP`` of an
  interval after the last one started, so a probe that timed out is
  followed at once. A rising check keeps its schedule: ``rise`` passes an
  interval apart are what keeps a resolver that flaps every few hundred
  milliseconds out (bench/compare.py, question 7: confirming the rise too
  let one flapping every 300 ms back in five times a minute instead of once).
  A probe confirming a failure waits only ``CONFIRM_TIMEOUT`` of the check's
  timeout: the full timeout has already been given once, and each probe
  still sends its query up to three times, so a lost packet does not fail
  it (over UDP; TCP, DoT, DoH and commands keep their whole timeout). A
  frozen resolver is then decided in one timeout and ``fall - 1`` short
  ones instead of ``fall`` intervals; with clients' queries stuck in its
  queue, in ``fall`` short ones.
* ``MaintenanceBook`` holds who drained what and why, persisted through a
  ``MaintenanceStore`` before it is lifted and applied even when it cannot be
  (a failure errs towards carrying no traffic). A book that cannot be read
  drains every name it is given, and says why (anycastd.daemons.state).
  ``lift_and_forgive`` is `anycastctl announce` in both: the drains end, then
  the flap penalties go, each logged once and each decision carried out by
  the daemon.
* ``Loops`` supervises the daemon's tasks: each only ends by raising, and the
  first to end stops the daemon with its exception, so that a dead loop is
  never a silent one.
* ``new_health`` builds a health machine from a service's checks, and
  ``log_decision`` logs what it decided, the same way in both daemons.

* ``SharedProbe`` is one schedule for a check that several of the sidecar's
  services have alike (field for field): each round asks every address once
  (``probe_each``) and gives each member the verdict on its own addresses, so
  a hundred services of one check cost one probe loop, not a hundred. While
  every member is up and nothing woke it, a round is *steady*: it asks the
  check's own address and a slice of the service addresses, in turn
  (anycastd.core.sweep); any other round asks every address.

Neither daemon imports the other; both import this.

Why this module is over 500 lines: the schedule (single and shared) and the
maintenance book are everything the two daemons share, and each daemon imports
them as one layer; the schedule is the part to split out first should it grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from anycastd.checks.dns import Prober, ProbeResult, SharedProber, combine, targets_of
from anycastd.config.checks import Check
from anycastd.control.protocol import ControlError
from anycastd.core.damping import Damping, DampingSettings
from anycastd.core.health import Decision, ServiceHealth, State, Thresholds
from anycastd.core.net import IPAddress
from anycastd.core.sweep import Sweep
from anycastd.daemons.state import MAX_TEXT, Maintenance, MaintenanceStore, StateError
from anycastd.daemons.status import CheckStatus
from anycastd.peer import Peer

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Jitter = Callable[[float], float]
T = TypeVar("T")

#: A failing check is probed again this fraction of its interval after the last probe started.
CONFIRM_GAP = 0.25
#: A probe confirming a failure waits this fraction of the check's timeout.
CONFIRM_TIMEOUT = 1 / 3


#: Added to a check's interval + timeout before its loop counts as stalled.
STALL_SLACK = 1.0


class Liveness:
    """Deadlines by which each probe loop must beat again: the sidecar's ExaBGP heartbeat and both
    daemons' systemd watchdog pings go out only while every one is met."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._deadlines: dict[str, float] = {}

    def beat(self, key: str, within: float) -> None:
        self._deadlines[key] = self.clock() + within

    def forget(self, key: str) -> None:
        self._deadlines.pop(key, None)

    def __call__(self) -> bool:
        now = self.clock()
        return all(deadline >= now for deadline in self._deadlines.values())


def new_health(
    name: str, checks: Sequence[Check], damping: DampingSettings | None, require: int | None = None
) -> ServiceHealth:
    """The health machine of one target: one check machine per check, flap damping unless turned off, and
    how many checks must pass (``require``; None: all)."""
    thresholds = [Thresholds(c.rise, c.fall, c.fall_hard) for c in checks]
    return ServiceHealth.create(name, thresholds, Damping(damping) if damping is not None else None, require)


#: States whose entry is logged as a warning: the target carries less, or none, of the traffic.
_WORSE = (State.DOWN, State.FALLING, State.MAINTENANCE)


def log_decision(decision: Decision, logger: logging.Logger) -> None:
    """Log every transition (``name: old -> new (reason)``) and every flap damping note of ``decision``,
    under the daemon's own name (``logger``): the log says which variant decided."""
    for transition in decision.transitions:
        logger.log(logging.WARNING if transition.new in _WORSE else logging.INFO, "%s", transition)
    for note in decision.notes:
        logger.warning("%s", note)


class Loops:
    """The daemon's long-running tasks: none ends but by raising, and the first to end ends the daemon.

    ``until(stop)`` returns once ``stop`` is set, or raises what the first loop to end raised (a loop
    that returned is an error too). Loops can be started and stopped while it waits (a reload does)."""

    def __init__(self) -> None:
        self._ended: asyncio.Future[None] | None = None
        self._stopping = False  # until() has returned: loops now end because they are told to

    @property
    def running(self) -> bool:
        """``until`` has started: loops started now run at once."""
        return self._ended is not None

    def start(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self.watch(task)
        return task

    def watch(self, future: asyncio.Future[Any]) -> None:
        """Count ``future`` as a loop: its end, by any means but cancelling, ends the daemon."""
        future.add_done_callback(self._on_done)

    def _on_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or self._stopping or self._ended is None or self._ended.done():
            return
        exc = future.exception()
        name = future.get_name() if isinstance(future, asyncio.Task) else repr(future)
        self._ended.set_exception(exc or RuntimeError(f"{name} ended"))

    def arm(self) -> None:
        """From now on, a loop that ends ends the daemon (a loop started before this is watched too)."""
        self._ended = asyncio.get_running_loop().create_future()

    async def until(self, stop: asyncio.Event) -> None:
        if self._ended is None:
            self.arm()
        assert self._ended is not None
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stopping, self._ended], return_when=asyncio.FIRST_COMPLETED)
            if self._ended.done():
                self._ended.result()  # a loop only ends by raising: let it be seen
        finally:
            self._stopping = True
            stopping.cancel()

    @staticmethod
    async def stop(tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Cancel ``tasks`` and wait until they have ended."""
        tasks = list(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def stall_after(check: Check) -> float:
    """How long a loop probing ``check`` may go without a beat before it counts as stalled."""
    return check.interval + check.timeout + STALL_SLACK


def confirming(check: Check) -> Check:
    """The check as a probe confirming a failure runs it: the same query, a shorter wait. Only a query sent
    again within its timeout (UDP: DNS and zone checks) can take the shorter wait: over TCP a lost segment
    is sent again after TCP's own minimum (200 ms), and a command takes as long as it takes."""
    if check.kind == "command" or (check.kind == "dns" and check.transport != "udp"):
        return check
    return replace(check, timeout=check.timeout * CONFIRM_TIMEOUT)


@dataclass(eq=False)
class Probe:
    """One check of one target (a service on this host, or one server of a service behind the router)."""

    key: str  # for task names and logs: "dns/checks[0]", "dns/ns1/checks[0]"
    index: int  # the check's number within its ServiceHealth
    check: Check
    service_addresses: tuple[IPAddress, ...]  # also queried, where the prober can reach them
    health: ServiceHealth
    status: CheckStatus
    wake: asyncio.Event | None = None  # set: probe now, whatever the schedule says
    urgent: bool = False  # the next probe follows an event that suggests a failure: a confirming probe's timeout
    #: The probe in flight while it waits the full timeout (probe_forever sets it; ``hurry`` cancels it).
    inflight: asyncio.Future[Any] | None = None
    running: bool = False  # a round is probing: from its start until its results are recorded

    def hurry(self) -> None:
        """An event says the resolver has stopped (its clients' queries are stuck): probe now, with a
        confirming probe's timeout, instead of the probe in flight that would wait the full one."""
        _hurry(self)

    def resume(self) -> None:
        """An event says the resolver reads its queue again: probe now if the last probe failed."""
        _resume(self, failed(self))


@dataclass(eq=False)
class SharedProbe:
    """One check that several targets ask alike (the sidecar's services with the very same check): probed
    once a round, each member given the verdict on its own addresses (``targets_of``) and fed to its own
    health machine. A round confirms a failure (a short timeout, CONFIRM_GAP) while any member is failing.

    Members join and leave between rounds (a reload); the schedule, the wake-up and the hurry are the group's.
    """

    key: str
    check: Check
    members: list[Probe]
    wake: asyncio.Event | None = None
    urgent: bool = False
    inflight: asyncio.Future[Any] | None = None
    running: bool = False
    sweep: Sweep = field(default_factory=Sweep)  # which service addresses the next steady round asks

    @property
    def service_addresses(self) -> tuple[IPAddress, ...]:
        """Every member's addresses, once each (what the triggers watch)."""
        return tuple(dict.fromkeys(a for m in self.members for a in m.service_addresses))

    def targets(self) -> list[IPAddress]:
        """Every address a full round asks, once each: the check's own first, then the service addresses."""
        return list(dict.fromkeys(t for m in self.members for t in targets_of(self.check, m.service_addresses)))

    def asked(self, steady: bool) -> list[IPAddress]:
        """The addresses this round asks: all of them, or in a steady round (every member up) the check's
        own and the sweep's next slice of the service addresses (anycastd.core.sweep)."""
        targets = self.targets()
        return targets[:1] + self.sweep.next(targets[1:], self.check.interval) if steady else targets

    def hurry(self) -> None:
        _hurry(self)

    def resume(self) -> None:
        _resume(self, any(failed(m) for m in self.members))


def _hurry(probe: Probe | SharedProbe) -> None:
    probe.urgent = True
    if probe.inflight is not None:
        probe.inflight.cancel()
    if probe.wake is not None:
        probe.wake.set()


def failed(probe: Probe) -> bool:
    """The last probe of ``probe`` failed."""
    last = probe.status.last
    return last is not None and not last.ok


def _resume(probe: Probe | SharedProbe, failing: bool) -> None:
    if failing and not probe.running and probe.wake is not None:
        probe.wake.set()


OnResult = Callable[[Probe, ProbeResult, Decision], Awaitable[None]]
#: One round's probing: the results of each member, given the check as this round runs it and whether the
#: round is steady (every member up, not confirming, not woken: it may ask a slice of the service addresses).
Round = Callable[[Check, bool], Awaitable[list[tuple[Probe, ProbeResult]]]]


async def probe_forever(
    probe: Probe,
    prober: Prober,
    on_result: OnResult,
    *,
    clock: Clock,
    sleep: Sleep,
    jitter: Jitter,
    beat: Callable[[Probe], None] | None = None,
) -> None:
    """Probe ``probe.check`` on its schedule until cancelled (see the module's docstring)."""

    async def once(check: Check, steady: bool) -> list[tuple[Probe, ProbeResult]]:
        return [(probe, await prober.probe(check, probe.service_addresses))]

    def beat_one(_: Probe | SharedProbe) -> None:
        if beat is not None:
            beat(probe)

    await _schedule(probe, lambda: [probe], once, on_result, clock=clock, sleep=sleep, jitter=jitter, beat=beat_one)


async def probe_shared_forever(
    shared: SharedProbe,
    prober: SharedProber,
    on_result: OnResult,
    *,
    clock: Clock,
    sleep: Sleep,
    jitter: Jitter,
    beat: Callable[[SharedProbe], None],
    after: Callable[[], Awaitable[None]],
) -> None:
    """Probe ``shared.check`` once a round for all its members until cancelled; ``after`` each round (the
    sidecar announces the round's changes in one batch)."""

    async def once(check: Check, steady: bool) -> list[tuple[Probe, ProbeResult]]:
        members = list(shared.members)
        asked = shared.asked(steady)
        if len(members) == 1:  # a check of its own: as probe_forever asks it
            kept = set(asked)
            return [(members[0], await prober.probe(check, [a for a in members[0].service_addresses if a in kept]))]
        answers = dict(zip(asked, await prober.probe_each(check, asked), strict=True))
        return [
            (m, combine([answers[t] for t in targets_of(check, m.service_addresses) if t in answers])) for m in members
        ]

    def beat_shared(unit: Probe | SharedProbe) -> None:
        assert unit is shared
        beat(shared)

    await _schedule(
        shared, lambda: shared.members, once, on_result, clock=clock, sleep=sleep, jitter=jitter, beat=beat_shared,
        after=after,
    )  # fmt: skip


async def _schedule(
    unit: Probe | SharedProbe,
    members: Callable[[], Sequence[Probe]],
    once: Round,
    on_result: OnResult,
    *,
    clock: Clock,
    sleep: Sleep,
    jitter: Jitter,
    beat: Callable[[Probe | SharedProbe], None],
    after: Callable[[], Awaitable[None]] | None = None,
) -> None:
    check = unit.check
    short = confirming(check)
    beat(unit)
    woken = await _wait(unit, jitter(check.interval), sleep)
    next_at = clock()
    wakes = 0  # wake-ups since the last round that gave results
    while True:
        beat(unit)
        doubt = any(in_doubt(m) for m in members()) or unit.urgent
        steady = not doubt and not woken and all(m.health.checks[m.index].state is State.UP for m in members())
        unit.urgent = False
        wakes += woken
        started = clock()
        unit.running = True  # until every member's result is recorded: ``resume`` reads the last ones
        try:
            try:
                results = await _run(unit, once(short if doubt else check, steady), doubt)
            except _Hurried:  # hurry() abandoned it: the urgent probe replaces it, at once, and the schedule restarts
                woken, next_at = _cleared(unit), clock()
                continue
            now = clock()
            for member, result in results:
                member.status.woken += wakes
                decision = record(member, result, doubt, now)
                await on_result(member, result, decision)
        finally:
            unit.running = False
        wakes = 0
        if after is not None:
            await after()
        # a group is never empty here: one left empty is cancelled (in its round's await) before this line
        next_at = min(next_due(m, started, next_at, clock()) for m in members())
        woken = await _wait(unit, next_at - clock(), sleep)
        if woken:
            next_at = clock()  # woken early: the schedule starts again from this probe


def _cleared(probe: Probe | SharedProbe) -> bool:
    if probe.wake is not None:
        probe.wake.clear()
    return True


class _Hurried(Exception):
    """The probe in flight was abandoned by ``Probe.hurry``."""


async def _run(probe: Probe | SharedProbe, probing: Awaitable[T], short: bool) -> T:
    """Await one probe; one that waits the full timeout can be abandoned by ``Probe.hurry`` (``_Hurried``)."""
    if short or probe.wake is None:
        return await probing  # already quick, or nothing can hurry it
    task: asyncio.Future[T] = asyncio.ensure_future(probing)
    probe.inflight = task
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and current is not None and not current.cancelling():
            raise _Hurried from None
        raise
    finally:
        probe.inflight = None
        if not task.done():
            task.cancel()


def in_doubt(probe: Probe) -> bool:
    """The next probe confirms a failure (see the module's docstring): it waits only CONFIRM_TIMEOUT."""
    return probe.health.checks[probe.index].state is State.FALLING


def record(probe: Probe, result: ProbeResult, confirmed: bool, now: float) -> Decision:
    """Count ``result`` (``confirmed``: of a probe confirming a failure) and feed it to the health machine."""
    status = probe.status
    status.last, status.last_at = result, now
    status.probes += 1
    status.failures += 0 if result.ok else 1
    status.confirming += confirmed
    return probe.health.feed(probe.index, result.for_health(), now)


def next_due(probe: Probe, started: float, due: float, now: float) -> float:
    """When the next probe is due, given when the last started and when it was due.

    A failing check is confirmed CONFIRM_GAP of an interval after the last probe started; otherwise
    the schedule goes on from when the last was due, so that the rate does not drift. A probe that
    ran late starts a new schedule from now instead of a burst to catch up.
    """
    check = probe.check
    if probe.health.checks[probe.index].state is State.FALLING:
        due = started + check.interval * CONFIRM_GAP
    else:
        due += check.interval
    return max(due, now)


async def _wait(probe: Probe | SharedProbe, delay: float, sleep: Sleep) -> bool:
    """Sleep ``delay``, or less if ``probe.wake`` is set meanwhile; True if woken."""
    delay = max(delay, 0.0)
    wake = probe.wake
    if wake is None:
        await sleep(delay)
        return False
    await sleep_unless(wake, delay, sleep)
    woken = wake.is_set()
    wake.clear()
    return woken


async def sleep_unless(event: asyncio.Event, delay: float, sleep: Sleep) -> None:
    """Sleep ``delay`` with ``sleep`` (the daemon's own, faked in tests), or less if ``event`` is set meanwhile."""
    if event.is_set():
        return
    sleeping = asyncio.ensure_future(sleep(delay))
    waking = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([sleeping, waking], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeping, waking):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def who(peer: Peer, claimed: str) -> str:
    """Who asked, for the log and the book: the kernel's answer, and the sudo user the client names."""
    return peer.user + (f" (sudo by {claimed})" if claimed and claimed != peer.user else "")


class MaintenanceBook:
    """The operator's drains by name (services for the sidecar, servers for the router), persisted."""

    def __init__(self, store: MaintenanceStore, wall: Clock) -> None:
        self.store = store
        self.wall = wall
        self.entries: dict[str, Maintenance] = {}
        #: Why the persisted book could not be read, until an operator lifts every drain.
        self.problem: str | None = None

    def restore(self, names: Sequence[str], lift_with: str) -> dict[str, Maintenance]:
        """Load the book; if it cannot be read, drain every one of ``names`` and persist that."""
        try:
            self.entries = self.store.load()
        except StateError as exc:
            self.problem = str(exc)
            log.error("%s. Everything stays drained until `%s` (check the file first: an operator may have "
                      "drained this node)", exc, lift_with)  # fmt: skip
            reason = f"maintenance state unreadable: {exc}"[:MAX_TEXT]
            self.entries = {name: Maintenance(reason, "anycastd", self.wall()) for name in names}
            try:  # so that a restart before the operator acts still withdraws
                self.store.save(self.entries)
            except StateError as save_problem:
                log.error("%s", save_problem)
        return self.entries

    def drain(self, names: Iterable[str], reason: str, by: str, soft: bool = False) -> str | None:
        """Record a drain of ``names`` (applied whether or not it persists); a warning if it did not persist."""
        now = self.wall()
        for name in names:
            self.entries[name] = Maintenance(reason, by, now, soft)
        try:
            self.store.save(self.entries)
        except StateError as exc:
            return str(exc)
        return None

    def lift(self, names: Iterable[str], everything: bool) -> list[str]:
        """End the drains of ``names``; raise StateError, changing nothing, if that cannot be persisted.

        Returns the names that were drained. ``everything`` (no name given) also clears ``problem``.
        """
        gone = list(names)
        lifted = [name for name in gone if name in self.entries]
        remaining = {k: v for k, v in self.entries.items() if k not in gone}
        self.store.save(remaining)
        self.entries = remaining
        if everything:
            self.problem = None
        return lifted

    def get(self, name: str) -> Maintenance | None:
        return self.entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.entries


@dataclass(frozen=True)
class Lifted:
    """What `anycastctl announce` did: the drains it ended, the names it found not drained, the
    names whose flap penalty it cleared."""

    lifted: tuple[str, ...]
    not_drained: tuple[str, ...]
    cleared: tuple[str, ...]


async def lift_and_forgive(
    book: MaintenanceBook,
    drained: Sequence[str],
    healths: Mapping[str, Sequence[ServiceHealth]],
    apply: Callable[[str, Decision], Awaitable[None]],
    *,
    everything: bool,
    again: str,
    kept: str,
    now: float,
) -> Lifted:
    """`anycastctl announce`: end the drains of ``drained``, then clear the flap penalty of every name of
    ``healths`` (the operator vouches for them), each decision carried out by ``apply(name, decision)``.

    ``again`` says when traffic comes back ("announced again", "routed again"); if the book cannot be
    saved, ControlError says so with ``kept`` (what stays as it was) and nothing changes."""
    try:
        lifted = book.lift(drained, everything=everything)
    except StateError as exc:
        raise ControlError(f"{exc}; nothing was changed: {kept}") from None
    for name in lifted:
        log.warning("%s: maintenance ended; %s once its probes pass", name, again)
        for health in healths.get(name, ()):
            await apply(name, health.undrain(now))
    cleared = [name for name, hs in healths.items() if any(h.suppressed for h in hs)]
    for name, hs in healths.items():
        if name in cleared:
            log.warning("%s: flap penalty cleared by an operator; %s once its probes pass", name, again)
        for health in hs:
            await apply(name, health.forgive(now))
    return Lifted(tuple(lifted), tuple(n for n in drained if n not in lifted), tuple(cleared))
