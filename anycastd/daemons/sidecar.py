"""The per-server daemon loop: probe, feed the health core, carry out its actions.

Theory of operation
-------------------
Each distinct check runs in one task on its own schedule, shared by every
service that has that very check (anycastd.daemons.skeleton.SharedProbe): a
round asks each address once, and each service is judged on its own addresses
by its own ``health.ServiceHealth``. The tasks decide nothing: the health core
decides, this module does. What a round changes is announced at its end, in
one batch (``Announcer.want``, then ``flush``). Every loop iteration also
beats a ``Liveness``; the announcer heartbeats its watchdog only while every
loop is beating, so a stuck loop withdraws routes (fail-closed) instead of
leaving a stale announcement behind.

The operator's side (``handle``: status, withdraw, announce, check) and
``reload`` act on the same objects between two probe results, on the same
event loop, so no lock is needed: a decision is always taken on a state no
other task is halfway through changing.

Each probe loop starts after a first delay (``FirstDelays``): none for the
first loop started, so that a sidecar that starts, or restarts for an
upgrade, probes at once and its rise begins then; the next ones fall evenly
over the interval, so that distinct checks do not all fire in step.

Maintenance is persisted *before* it is lifted and applied even when it
cannot be persisted: in both cases a failure errs towards carrying no
traffic, never towards announcing a node an operator took out.

Stopping (SIGTERM) withdraws everything first, then waits until the service
addresses have been quiet for ``drain.quiet`` (at most ``drain.grace``), then
stops ExaBGP: a resolver stopped right after anycastd loses no queries.

Why one module of about 620 lines: the probe loops, the operator's requests,
reload and shutdown act on one state (each service's health, its path, its
maintenance) on one event loop, without locks, because nothing else touches
it. What decides is elsewhere: the health machine, flap damping and the path
(anycastd.core.health, anycastd.core.damping), what both daemons share (the schedule,
the loop supervisor, the maintenance book and `anycastctl announce`:
anycastd.daemons.skeleton; the status entries: anycastd.daemons.status), the drain's
quiet wait (anycastd.watch.drain), and ExaBGP (anycastd.announce). What is left is
the order in which things happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

from anycastd.announce import Announcer
from anycastd.announce.bfdd import BfdSpeaker
from anycastd.announce.flaps import SessionFlaps
from anycastd.announce.return_path import ReturnPath
from anycastd.checks.dns import ProbeResult, SharedProber
from anycastd.config.checks import Check
from anycastd.config.sidecar import Config, Service
from anycastd.control.protocol import (
    AnnounceReply,
    AnnounceRequest,
    CheckReply,
    CheckRequest,
    ControlError,
    DrainOutcome,
    Reply,
    Request,
    StatusReply,
    StatusRequest,
    WithdrawReply,
    WithdrawRequest,
    by_name,
)
from anycastd.core.attributes import PLAIN
from anycastd.core.clock import iso
from anycastd.core.damping import Damping
from anycastd.core.degradation import Degradation, Sample
from anycastd.core.health import GRACEFUL_SHUTDOWN, Decision, Path, ServiceHealth, State, path_of
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.daemons.metrics import Metrics, ServiceView, View
from anycastd.daemons.skeleton import (
    Clock,
    Liveness,
    Loops,
    MaintenanceBook,
    Probe,
    SharedProbe,
    Sleep,
    lift_and_forgive,
    log_decision,
    new_health,
    probe_shared_forever,
    stall_after,
    who,
)
from anycastd.daemons.state import Maintenance, MaintenanceStore
from anycastd.daemons.status import CheckStatus, StatusWriter, probe_outcome, weight_status
from anycastd.errors import AddressError, AnnounceError, ConfigError
from anycastd.peer import Peer
from anycastd.watch.address import Addresses
from anycastd.watch.drain import DrainReport, TrafficMeter, Verdict, wait_quiet
from anycastd.watch.triggers import Polling, Triggers

log = logging.getLogger(__name__)


#: How the log names a soft drain.
SOFT = "soft "
#: The golden ratio's fractional part: the k-th first delay is frac(k * GOLDEN) of an interval, and any number
#: of them lies evenly over it (each new one falls in the largest gap the others leave).
GOLDEN = (5**0.5 - 1) / 2


class FirstDelays:
    """The first delay of each probe loop the sidecar starts, as a fraction of its interval: 0 for the first,
    then frac(k * GOLDEN). A sidecar probes its own resolver only, so nothing is gained by waiting at start,
    and every check it starts together (after a reload too) is spread over the interval."""

    def __init__(self) -> None:
        self.started = 0

    def __call__(self, interval: float) -> float:
        k, self.started = self.started, self.started + 1
        return (k * GOLDEN) % 1.0 * interval


def _loop_key(service: str, index: int) -> str:
    return f"{service}/checks[{index}]"


class Sidecar:
    def __init__(
        self,
        config: Config,
        announcer: Announcer,
        addresses: Addresses,
        prober: SharedProber,
        liveness: Liveness,
        *,
        store: MaintenanceStore,
        meter: TrafficMeter,
        metrics: Metrics | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[float], float] | None = None,  # the first delay of each probe loop; None: FirstDelays()
        triggers: Triggers | None = None,
        bfd: BfdSpeaker | None = None,
        return_path: ReturnPath | None = None,
        flaps: SessionFlaps | None = None,
    ) -> None:
        self.config = config
        #: The server's routes towards its clients, following the live sessions; None: left to the host.
        self.return_path = return_path
        self._return_task: asyncio.Task[None] | None = None
        #: Flap damping of the BFD sessions (anycastd.announce.flaps); `anycastctl announce` clears it as
        #: the services' own.
        self.flaps = flaps
        #: BFD for the neighbors that ask for it (anycastd.announce.bfdd), None when none does.
        self.bfd = bfd
        #: What wakes a probe before its time (anycastd.watch.triggers); by default nothing does.
        self.triggers: Triggers = triggers or Polling("no event source was given")
        self.announcer = announcer
        self.addresses = addresses
        self.prober = prober
        self.liveness = liveness
        self.meter = meter
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.jitter = jitter or FirstDelays()
        self.health: dict[str, ServiceHealth] = {}
        self.checks: dict[str, list[CheckStatus]] = {}
        #: What each service's path was last set to (the announcer keeps it, and replays it after a restart).
        self.paths: dict[str, Path] = {}
        #: Each service's weight level (anycastd.core.degradation); only services with a degraded_weight.
        self.degradation: dict[str, Degradation] = {}
        #: Persisted maintenance, by service name; may name services this configuration lacks.
        self.book = MaintenanceBook(store, wall)
        #: The probe loops: one per distinct check, shared by every service that has that very check.
        self._groups: dict[Check, SharedProbe] = {}
        self._group_tasks: dict[Check, asyncio.Task[None]] = {}
        self._owner: dict[str, str] = {}  # each member probe's service, by Probe.key
        self.loops = Loops()
        self.writer = StatusWriter(clock, wall)
        self.metrics.watch(self.view)
        for service in config.services:
            self._init_service(service)

    # lifecycle ------------------------------------------------------------

    def _init_service(self, service: Service) -> None:
        self.metrics.declare([(service.name, len(service.checks))])
        self.health[service.name] = new_health(service.name, service.checks, service.damping, service.require)
        self.checks[service.name] = [CheckStatus() for _ in service.checks]
        self.paths[service.name] = Path.WITHDRAWN
        self.degradation.pop(service.name, None)
        if service.degraded_weight is not None:
            damping = Damping(service.damping) if service.damping is not None else None
            self.degradation[service.name] = Degradation([c.degraded_when for c in service.checks], damping)
            self.metrics.declare_degradation(service.name)
        drained = self.book.get(service.name)
        if drained is not None:
            self.health[service.name].drain(drained.reason, self.clock(), drained.soft)

    @property
    def maintenance(self) -> dict[str, Maintenance]:
        return self.book.entries

    def restore_maintenance(self) -> None:
        """Load the persisted drains; an unreadable file withdraws everything (see anycastd.daemons.state)."""
        names = [s.name for s in self.config.services]
        for name, m in self.book.restore(names, "anycastctl announce").items():
            if name in self.health:
                self.health[name].drain(m.reason, self.clock(), m.soft)
                log.warning(
                    "%s: in %smaintenance since %s (%s, by %s)",
                    name,
                    SOFT if m.soft else "",
                    iso(m.since),
                    m.reason,
                    m.who,
                )
            else:
                log.warning("maintenance of %s is kept, but no such service is configured", name)

    async def run(self, stop: asyncio.Event) -> None:
        await self._bind(self.config.services)
        self.restore_maintenance()
        if self.bfd is not None:
            await self.bfd.start()
        await self.announcer.start()
        if self.return_path is not None:
            self._return_task = asyncio.create_task(self.return_path.run(), name="return path")
        self.loops.arm()
        self._start_services(self.config.services)
        try:
            await self.loops.until(stop)
        finally:
            await self._stop_services({*self._owner.values()})
            await self._shutdown()

    async def _bind(self, services: Sequence[Service]) -> None:
        """Bind the services' addresses: one netlink session per interface, however many services share it."""
        by_interface: dict[str, list[IPNetwork]] = {}
        for service in services:
            by_interface.setdefault(service.interface, []).extend(service.prefixes)
        for interface, prefixes in by_interface.items():
            await self.addresses.ensure(interface, prefixes)

    async def _shutdown(self) -> None:
        announced = [s for s in self.config.services if self.paths[s.name] is not Path.WITHDRAWN]
        log.info("withdrawing everything")
        for service in announced:
            await self._set_path(service.name, service.prefixes, Path.WITHDRAWN, flush=False)
        await self._flush()
        grace = self.config.drain.grace
        if announced and grace > 0:
            await self.wait_drained(announced, quiet=min(self.config.drain.quiet, grace), timeout=grace, fallback=grace)
        self.triggers.close()
        log.info("stopping ExaBGP")
        await self.announcer.close()
        if self._return_task is not None and self.return_path is not None:
            self._return_task.cancel()
            await asyncio.gather(self._return_task, return_exceptions=True)
            await self.return_path.close()
        if self.bfd is not None:  # after ExaBGP: the router sees the sessions close, not BFD fail
            await self.bfd.close()
        await self.meter.close()

    def _start_services(self, services: Sequence[Service]) -> None:
        """Start probing ``services``: each of their checks joins the group probing that very check, or starts
        one; the triggers then watch each group touched once (a thousand services: a thousand joins, not a
        thousand scans of every address)."""
        touched: dict[Check, SharedProbe] = {}
        for service in services:
            for index, check in enumerate(service.checks):
                member = Probe(
                    _loop_key(service.name, index),
                    index,
                    check,
                    service.host_addresses,
                    self.health[service.name],
                    self.checks[service.name][index],
                )
                self._owner[member.key] = service.name
                group = self._groups.get(check)
                if group is None:
                    group = self._groups[check] = SharedProbe(member.key, check, [member])
                    self._group_tasks[check] = self.loops.start(self._check_loop(group), group.key)
                else:
                    group.members.append(member)
                touched[check] = group
        for group in touched.values():
            detection = self.triggers.watch(group)  # its new addresses too
            for member in group.members:
                member.status.detection, member.status.detection_note = detection

    async def _stop_services(self, names: Collection[str]) -> None:
        """Stop probing ``names``: their checks leave their groups; a group left empty stops."""
        if not names:
            return
        for check, group in list(self._groups.items()):
            kept = [m for m in group.members if self._owner.get(m.key) not in names]
            if len(kept) == len(group.members):
                continue
            group.members[:] = kept
            if kept:
                self.triggers.watch(group)  # fewer addresses to watch
                continue
            del self._groups[check]
            await Loops.stop([self._group_tasks.pop(check)])
            self.liveness.forget(group.key)  # a stopped loop is not a stuck one
        self._owner = {key: owner for key, owner in self._owner.items() if owner not in names}

    async def _check_loop(self, group: SharedProbe) -> None:
        within = stall_after(group.check)

        async def on_result(probe: Probe, result: ProbeResult, decision: Decision) -> None:
            service = self.config.by_name.get(self._owner.get(probe.key, ""))
            if service is None or self.health.get(service.name) is not probe.health:
                return  # it left during the round (a reload): its result is nobody's
            self.metrics.probe(service.name, probe.index, result.ok, result.kind, result.latency)
            await self.degrade(service, probe.index, result, flush=False)
            await self.apply(service, decision, flush=False)

        try:
            await probe_shared_forever(
                group,
                self.prober,
                on_result,
                clock=self.clock,
                sleep=self.sleep,
                jitter=self.jitter,
                beat=lambda g: self._beat(g, within),
                after=self._flush,
            )
        finally:
            self.triggers.forget(group)

    def _beat(self, probe: SharedProbe, within: float) -> None:
        """Every probe round, before the probe: the loop is alive, and the receive queues are sampled."""
        self.liveness.beat(probe.key, within)
        self.triggers.tick()

    async def apply(self, service: Service, decision: Decision, flush: bool = True) -> None:
        """Carry out ``decision``: the service's path set as the health core says; ``flush``: announced now,
        else with the rest of the probe round's changes (``_flush``)."""
        log_decision(decision, log)
        for transition in decision.transitions:
            if transition.name == service.name:
                self.metrics.transition(service.name, transition.new)
        health = self.health[service.name]
        path = path_of(health, service.graceful_shutdown)
        if path is not self.paths[service.name]:
            if path is Path.GRACEFUL_SHUTDOWN and health.state is not State.MAINTENANCE:
                log.warning(
                    "%s: failing: its path stays announced, tagged GRACEFUL_SHUTDOWN (%s): routers that honour it "
                    "use it only while no healthy path is left",
                    service.name,
                    GRACEFUL_SHUTDOWN,
                )
            await self._set_path(service.name, service.prefixes, path, flush)

    async def degrade(self, service: Service, index: int, result: ProbeResult, flush: bool = True) -> None:
        """Feed a probe's latency to the service's degradation; a move that changes the weight is announced at
        once if the path is (a withdrawn path carries no weight: it takes the new one when announced)."""
        degradation = self.degradation.get(service.name)
        if degradation is None:
            return
        move = degradation.observe(index, Sample(result.ok, result.latency, result.degraded), self.clock())
        if move is None:
            return
        self.metrics.degraded(service.name, move.new)
        weight = self.weight_of(service.name)
        log.warning("%s: weight %s -> %s (%s): %s", service.name, move.old, move.new, weight, move.reason)
        if move.reweighs and self.paths[service.name] is not Path.WITHDRAWN:
            await self._set_path(service.name, service.prefixes, self.paths[service.name], flush)

    def weight_of(self, name: str) -> int | None:
        """The weight ``name``'s path carries now: degraded_weight while degraded, else the configured one."""
        service = self.config.service(name)
        degradation = self.degradation.get(name)
        if degradation is not None and degradation.level.degraded:
            return service.degraded_weight
        return service.bgp.weight

    async def _set_path(self, name: str, prefixes: Sequence[IPNetwork], path: Path, flush: bool = True) -> None:
        self.paths[name] = path  # desired: the announcer keeps it even when this call fails
        service = self.config.by_name.get(name)
        configured = service.bgp if service is not None else PLAIN
        if name in self.degradation:
            configured = configured.weighing(self.weight_of(name))
        attributes = configured.tagged(GRACEFUL_SHUTDOWN) if path is Path.GRACEFUL_SHUTDOWN else configured
        try:
            self.announcer.want(name, prefixes, path is not Path.WITHDRAWN, attributes)
            if flush:
                await self.announcer.flush()
        except AnnounceError as exc:
            verb = {
                Path.WITHDRAWN: "withdraw",
                Path.ANNOUNCED: "announce",
                Path.GRACEFUL_SHUTDOWN: "announce tagged GRACEFUL_SHUTDOWN",
            }[path]
            log.error("%s: could not %s: %s", name, verb, exc)

    async def _flush(self) -> None:
        """Announce what a probe round changed, every service at once (one command per batch of prefixes)."""
        try:
            await self.announcer.flush()
        except AnnounceError as exc:
            log.error("could not announce the changes of a probe round: %s", exc)

    # reload ---------------------------------------------------------------

    async def reload(self, new: Config) -> dict[str, list[str]]:
        """Apply ``new``: unchanged services keep their state and routes; raise ConfigError and change nothing
        if it asks for what only a restart can do, or if its addresses cannot be bound."""
        restart = self.config.restart_only_changes(new)
        if restart:
            raise ConfigError(
                [f"{new.source}: {key} changed; only a restart of anycastd applies that" for key in restart]
            )
        old = {s.name: s for s in self.config.services}
        added = [s for s in new.services if s.name not in old]
        # only its BGP attributes: the same probes and state, the path announced again with the new ones
        differ = [s for s in new.services if s.name in old and old[s.name] != s]
        retagged = [s for s in differ if replace(s, bgp=old[s.name].bgp) == old[s.name]]
        changed = [s for s in differ if s not in retagged]
        removed = [name for name in old if name not in {s.name for s in new.services}]
        try:
            await self._bind([*added, *changed])
        except AddressError as exc:
            raise ConfigError([f"{new.source}: {exc}"]) from None
        gone = [*removed, *(s.name for s in changed)]
        await self._stop_services(set(gone))
        for name in gone:
            if self.paths[name] is not Path.WITHDRAWN:
                await self._set_path(name, old[name].prefixes, Path.WITHDRAWN, flush=False)
            del self.health[name], self.checks[name], self.paths[name]
            self.degradation.pop(name, None)
        self.config = new
        for service in [*added, *changed]:
            self._init_service(service)
        if self.loops.running:
            self._start_services([*added, *changed])
        for service in retagged:
            if self.paths[service.name] is not Path.WITHDRAWN:
                await self._set_path(service.name, service.prefixes, self.paths[service.name], flush=False)
        await self._flush()
        summary = {
            "added": [s.name for s in added],
            "changed": [s.name for s in changed],
            "retagged": [s.name for s in retagged],
            "removed": removed,
            "unchanged": [s.name for s in new.services if s.name in old and old[s.name] == s],
        }
        log.info("reloaded %s: %s", new.source, ", ".join(f"{k} {v}" for k, v in summary.items() if v) or "no change")
        return summary

    # control --------------------------------------------------------------

    async def handle(self, request: Request, peer: Peer) -> Reply:
        if getattr(request, "server", None) is not None:
            raise ControlError("this anycastd is a sidecar, it drains services; --server is for `anycastd router`")
        if isinstance(request, StatusRequest):
            return StatusReply(self.status(request.service))
        if isinstance(request, WithdrawRequest):
            return await self.withdraw(request, peer)
        if isinstance(request, AnnounceRequest):
            return await self.announce(request.service)
        return await self.check(request)

    def _targets(self, name: str | None) -> list[Service]:
        return by_name(self.config.services, name)

    async def withdraw(self, request: WithdrawRequest, peer: Peer) -> WithdrawReply:
        targets = self._targets(request.service)
        by = who(peer, request.user)
        problem = self.book.drain([s.name for s in targets], request.reason, by, request.soft)
        warning = None
        if problem is not None:
            warning = f"{problem}; withdrawn now, but a restart of anycastd would announce again"
        for service in targets:
            if request.soft:
                log.warning(
                    "%s: soft-drained for maintenance by %s: %s (its path stays, tagged GRACEFUL_SHUTDOWN, while "
                    "its probes pass: used only while no other path is left)", service.name, by, request.reason,
                )  # fmt: skip
            else:
                log.warning("%s: withdrawn for maintenance by %s: %s", service.name, by, request.reason)
            await self.apply(service, self.health[service.name].drain(request.reason, self.clock(), request.soft))
        drain = None
        if request.wait:
            d = self.config.drain
            report = await self.wait_drained(
                targets, quiet=d.quiet, timeout=request.timeout or d.timeout, fallback=d.fallback
            )
            drain = DrainOutcome(**report.to_json())
        return WithdrawReply(tuple(s.name for s in targets), warning, drain)

    async def wait_drained(
        self, services: Sequence[Service], *, quiet: float, timeout: float, fallback: float
    ) -> DrainReport:
        """Wait until the services' addresses are quiet (see anycastd.watch.drain), and log how it went."""
        addresses: list[IPAddress] = [a for s in services for a in s.host_addresses]
        report = await wait_quiet(
            self.meter,
            addresses,
            quiet=quiet,
            timeout=timeout,
            fallback=fallback,
            clock=self.clock,
            sleep=self.sleep,
        )
        names = ", ".join(s.name for s in services)
        level = logging.INFO if report.verdict is Verdict.DRAINED else logging.WARNING
        log.log(level, "drain of %s: %s after %.2f s (%s)", names, report.verdict.value, report.waited, report.note)
        return report

    async def announce(self, name: str | None) -> AnnounceReply:
        targets = {s.name: s for s in self._targets(name)}

        async def apply(name: str, decision: Decision) -> None:
            await self.apply(targets[name], decision)

        done = await lift_and_forgive(
            self.book,
            list(targets),
            {n: [self.health[n]] for n in targets},
            apply,
            everything=name is None,
            again="announced again",
            kept="the services stay withdrawn",
            now=self.clock(),
        )
        if self.flaps is not None and name is None:  # --all: the links too
            await self.flaps.forgive()
        return AnnounceReply(done.lifted, done.not_drained, done.cleared)

    async def check(self, request: CheckRequest) -> CheckReply:
        service = self._targets(request.service)[0]
        results = await asyncio.gather(*(self.prober.probe(c, service.host_addresses) for c in service.checks))
        return CheckReply(service.name, tuple(probe_outcome(i, r, None, self.wall) for i, r in enumerate(results)))

    # reading --------------------------------------------------------------

    def status(self, name: str | None = None) -> dict[str, Any]:
        confirmed = self.announcer.announced_prefixes()
        services = []
        for service in self._targets(name):
            health = self.health[service.name]
            services.append(
                {
                    "name": service.name,
                    "announced": health.announced,
                    "healthy": health.healthy,
                    "path": str(self.paths[service.name]),
                    "failure_action": service.failure_action,
                    "weight": weight_status(
                        service.bgp.weight, self.weight_of(service.name), self.degradation.get(service.name)
                    ),
                    "prefixes": [{"prefix": str(p), "announced": p in confirmed} for p in service.prefixes],
                    **self.writer.health(
                        health, service.checks, self.checks[service.name], self.maintenance.get(service.name)
                    ),
                }
            )
        return self.writer.document(
            "sidecar",
            self.config.source,
            self.book.problem,
            services,
            bgp=self.announcer.sessions(),
            exabgp=self.announcer.describe(),
            bfd=self.bfd.describe() if self.bfd is not None else None,
            return_path=self.return_path.describe() if self.return_path is not None else None,
        )

    # systemd (anycastd.daemons.sdnotify) ----------------------------------------------

    def ready(self) -> bool:
        """Started, and every service has a verdict (maintenance is one): its path has been set."""
        return self.loops.running and all(h.decided for h in self.health.values())

    def summary(self) -> str:
        """One line: each service's path and state, e.g. "dns announced (UP); dot withdrawn (DOWN)"."""
        return "; ".join(f"{s.name} {self.paths[s.name]} ({self.health[s.name].state})" for s in self.config.services)

    def alive(self) -> bool:
        return self.liveness()

    def view(self) -> View:
        now = self.clock()
        services = [
            ServiceView(
                name,
                h.state,
                h.announced,
                h.state is State.MAINTENANCE,
                self.paths[name] is Path.GRACEFUL_SHUTDOWN,
                h.damping.penalty(now) if h.damping else 0.0,
                h.suppressed,
                self.weight_of(name),
            )
            for name, h in self.health.items()
        ]
        return View(
            services,
            self.announcer.sessions(),
            self.announcer.restarts,
            str(self.announcer.state),
            self.announcer.last_answer,
            self.bfd.session_states() if self.bfd is not None else {},
            self.bfd.restarts if self.bfd is not None else 0,
        )
