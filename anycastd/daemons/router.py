"""`anycastd router`: probe every server from the router, keep FRR's static ECMP routes in step.

Theory of operation
-------------------
Every check of every server of every service runs in its own task on its
own schedule, with the sidecar's probes and the sidecar's health core: one
``ServiceHealth`` per (service, server). When a server's verdict changes,
its task only marks the routes *dirty*.

One task, the syncer, owns FRR. Woken by a dirty mark (or every
``router.resync`` seconds, to repair drift such as a restarted FRR), it
asks ``anycastd.core.routes`` which servers carry each service and what must
change, applies the change as one vtysh call, reads FRR back and compares.
A mismatch or a refusal is retried (tenacity) and then reported; the probes
go on, and the next sync repairs what is left. Because one task does every
change, two changes never race, and a burst of verdicts becomes one call.

Nothing changes until every server of a service has given a verdict, so a
restart keeps the routes as they are. Stopping leaves the routes as the
last sync made them: the servers keep their traffic while anycastd is away
(docs/operations.md says how to remove them).

Drains are by server: `anycastctl withdraw --server ns1` takes ns1 out of
every service it serves, and is persisted like the sidecar's.

Why one module of about 600 lines: the probes, the syncer and the operator's
requests act on one state (members, choices, what FRR holds) on one event
loop, without locks, because nothing else touches it; the decisions are
elsewhere (anycastd.core.routes, anycastd.core.health), as are what both daemons
share (the probe schedule, the loop supervisor, the maintenance book and
`anycastctl announce`: anycastd.daemons.skeleton; the status entries:
anycastd.daemons.status) and FRR's dialect (anycastd.announce.frr). What is left
is the order in which things happen.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from anycastd.announce.frr import RouteError, StaticRoutes
from anycastd.checks.dns import Prober, ProbeResult
from anycastd.config.checks import Check
from anycastd.config.router import RoutedService, RouterConfig, Server
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
from anycastd.core.clock import iso
from anycastd.core.health import Decision, ServiceHealth, State
from anycastd.core.routes import (
    Change,
    Choice,
    Divergence,
    Installed,
    Selection,
    StaticRoute,
    desired_routes,
    reconcile,
    repair,
    servers_routed,
)
from anycastd.daemons.engine import ProbeEngine
from anycastd.daemons.metrics import RouterMetrics, RouterView, ServerView
from anycastd.daemons.skeleton import (
    Clock,
    Liveness,
    Loops,
    MaintenanceBook,
    Probe,
    Sleep,
    lift_and_forgive,
    log_decision,
    new_health,
    probe_forever,
    stall_after,
    who,
)
from anycastd.daemons.state import Maintenance, MaintenanceStore
from anycastd.daemons.status import CheckStatus, StatusWriter, probe_outcome
from anycastd.peer import Peer
from anycastd.watch.fib import FibError, KernelFib, divergence

log = logging.getLogger(__name__)

SYNC_ATTEMPTS = 3
#: zebra's word lags the kernel while it takes in the dataplane's result of a change: at 64 servers a read
#: right after a change found zebra still claiming the IPv6 nexthop just removed, which the kernel had already
#: dropped, after most changes. So a difference counts as a divergence, and is reported and repaired, only
#: when a read at least this many seconds after it was first seen finds it still (docs/reliability.md).
FIB_SETTLE = 0.5
#: Servers start their schedules in steps of this many seconds. Probes that fall due in the same step
#: share one wake-up of the event loop, which is most of what a probe costs: 32 servers at 10 probes/s
#: cost about half the CPU they cost with start times spread to the microsecond (docs/benchmarks.md).
SLOT = 0.025


#: Why the router side polls: sock_diag sees the sockets of this host's own namespace only.
REMOTE = "the resolver is on another host: its sockets cannot be watched from here"


def _slot(seconds: float) -> float:
    return round(seconds / SLOT) * SLOT


@dataclass
class Member:
    """One server within one service: its health and its checks' last results."""

    service: RoutedService
    server: Server
    checks: tuple[Check, ...]
    health: ServiceHealth
    status: list[CheckStatus]

    @property
    def key(self) -> str:
        return f"{self.service.name}/{self.server.name}"


class Router:
    def __init__(
        self,
        config: RouterConfig,
        routes: StaticRoutes,
        prober: Prober,
        *,
        store: MaintenanceStore,
        metrics: RouterMetrics | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[float], float] = lambda interval: _slot(random.uniform(0, interval)),  # noqa: S311 (spreading load, not secrecy)
        retry_wait: tenacity.wait.wait_base | None = None,
        fib: KernelFib | None = None,
        engine: Callable[[], ProbeEngine] | None = None,
    ) -> None:
        self.config = config
        #: Makes the probe engine that runs every UDP check (anycastd.daemons.engine); None: one task per check.
        self.engine_factory = engine
        self.engine: ProbeEngine | None = None
        self.routes = routes
        #: The kernel's FIB, read back after every change: zebra's word alone is not proof. None: not read.
        self.fib = fib
        self.prober = prober
        self.metrics = metrics or RouterMetrics()
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.jitter = jitter
        self.retry_wait = retry_wait or tenacity.wait_exponential(multiplier=0.05, max=0.5)
        #: Every probe beats it with each result (the systemd watchdog pings only while all do).
        self.liveness = Liveness(clock)
        self.members: dict[str, list[Member]] = {}
        for service in config.services:
            self.members[service.name] = []
            for server in service.servers:
                checks = service.checks_for(server)
                health = new_health(f"{service.name}/{server.name}", checks, service.damping, service.require)
                status = [CheckStatus(detection_note=REMOTE) for _ in checks]
                self.members[service.name].append(Member(service, server, checks, health, status))
        keep = config.when_all_down == "keep"
        self.selections = {s.name: Selection(s.name, keep, s.cascade_window) for s in config.services}
        self.choices: dict[str, Choice | None] = {s.name: None for s in config.services}
        self.book = MaintenanceBook(store, wall)  # by server name
        self.installed: list[Installed] = []
        self.frr_known = False  # FRR has been read at least once
        self.frr_problem: str | None = None
        self.conflicts: tuple[StaticRoute, ...] = ()
        self.last_sync: float | None = None
        self.divergence: list[Divergence] = []
        self._suspected: dict[Divergence, float] = {}  # differences not yet FIB_SETTLE old: when first seen
        self._recheck: asyncio.TimerHandle | None = None
        self.fib_problem: str | None = None
        self._dirty = asyncio.Event()
        self._requested = 0
        self._completed = 0
        self._synced = asyncio.Condition()
        self._stopping = False
        self.loops = Loops()
        self.writer = StatusWriter(clock, wall)
        self.metrics.watch(self.view)
        self.metrics.declare((m.service.name, m.server.name, len(m.checks)) for ms in self.members.values() for m in ms)

    # lifecycle ------------------------------------------------------------

    @property
    def owned(self) -> frozenset[StaticRoute]:
        return frozenset(i.route for i in self.installed if i.tag == self.config.tag)

    @property
    def maintenance(self) -> dict[str, Maintenance]:
        return self.book.entries

    def restore_maintenance(self) -> None:
        """Load the persisted drains; an unreadable file drains every server (see anycastd.daemons.state)."""
        for name, m in self.book.restore(self.config.server_names, "anycastctl announce --all").items():
            members = self._members_of(name)
            for member in members:
                member.health.drain(m.reason, self.clock())
            if members:
                log.warning("%s: drained since %s (%s, by %s)", name, iso(m.since), m.reason, m.who)
            else:
                log.warning("maintenance of %s is kept, but no such server is configured", name)

    async def run(self, stop: asyncio.Event) -> None:
        self.restore_maintenance()
        await self._read_frr()
        for service in self.config.services:
            held = servers_routed(service, self.owned)
            self.selections[service.name].hold(held)
            if held:
                log.info(
                    "%s: FRR holds routes via %s; kept until every server has a verdict", service.name, _names(held)
                )
        tasks: list[asyncio.Task[None]] = []
        self.loops.arm()
        engine = self.engine = self.engine_factory() if self.engine_factory is not None else None
        if engine is not None:
            self.loops.watch(engine.failed)
        for members in self.members.values():
            for member in members:
                for index, check in enumerate(member.checks):
                    if engine is not None and check.datagram:
                        on_result = functools.partial(self._on_result, member)
                        engine.add(self._probe(member, index), on_result, self.jitter(check.interval))
                        continue
                    tasks.append(self.loops.start(self._check_loop(member, index), self._probe_key(member, index)))
        syncer = self.loops.start(self._sync_loop(), "syncer")
        try:
            await self.loops.until(stop)
        finally:
            if engine is not None:
                engine.close()
            if self._recheck is not None:
                self._recheck.cancel()
            await Loops.stop(tasks)
            self._stopping = True
            self._dirty.set()
            await asyncio.gather(syncer, return_exceptions=True)  # a change in progress finishes, none starts
            log.info("stopped; FRR keeps the routes as they are: %s", _routes(self.owned) or "none")

    @staticmethod
    def _probe_key(member: Member, index: int) -> str:
        return f"{member.key}/checks[{index}]"

    def _probe(self, member: Member, index: int) -> Probe:
        return Probe(
            self._probe_key(member, index), index, member.checks[index], (), member.health, member.status[index]
        )

    def _on_result(self, member: Member, probe: Probe, result: ProbeResult, decision: Decision) -> None:
        self.liveness.beat(probe.key, stall_after(probe.check))
        self.metrics.probe(member.service.name, member.server.name, probe.index, result)
        self._apply(decision)

    async def _check_loop(self, member: Member, index: int) -> None:
        async def on_result(probe: Probe, result: ProbeResult, decision: Decision) -> None:
            self._on_result(member, probe, result, decision)

        probe = self._probe(member, index)
        await probe_forever(probe, self.prober, on_result, clock=self.clock, sleep=self.sleep, jitter=self.jitter)

    def _apply(self, decision: Decision) -> None:
        log_decision(decision, log)
        if decision.actions or not all(c is not None for c in self.choices.values()):
            self._choose()  # at the verdict: a cascade is timed by the verdicts, not by when FRR is free
            self.request_sync()

    # syncing FRR ------------------------------------------------------------

    def request_sync(self) -> int:
        """Ask the syncer for a pass; the number returned is reached by ``completed`` once it has run."""
        self._requested += 1
        self._dirty.set()
        return self._requested

    async def wait_synced(self, ticket: int, timeout: float) -> bool:
        """Wait until a sync asked for no earlier than ``ticket`` has run; True if FRR then matched."""
        async with self._synced:
            try:
                await asyncio.wait_for(self._synced.wait_for(lambda: self._completed >= ticket), timeout)
            except TimeoutError:
                return False
        return self.frr_problem is None

    async def _sync_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._dirty.wait(), self.config.vtysh.resync)
                periodic = False
            except TimeoutError:
                periodic = True  # the periodic resync: reads FRR afresh, repairs drift nobody reported
            if self._stopping:
                break  # stopping leaves FRR as the last pass made it
            self._dirty.clear()
            ticket = self._requested
            await self.sync(fresh=periodic)
            async with self._synced:
                self._completed = ticket
                self._synced.notify_all()

    def _choose(self) -> None:
        for service in self.config.services:
            members = self.members[service.name]
            if not all(m.health.decided for m in members):
                continue  # keep what FRR has until every server has a verdict
            healthy = [m.server.name for m in members if m.health.announced]
            drained = [m.server.name for m in members if m.health.state is State.MAINTENANCE]
            old = self.choices[service.name]
            new = self.selections[service.name].choose(healthy, drained, self.clock())
            self.choices[service.name] = new
            if new.degraded and (old is None or old.degraded != new.degraded):
                log.error("%s: DEGRADED: %s", service.name, new.degraded)
            elif old is not None and old.degraded and not new.degraded:
                log.warning("%s: no longer degraded: %s carry it", service.name, _names(new.servers))

    async def _read_frr(self) -> bool:
        try:
            self.installed = await self.routes.read()
        except RouteError as exc:
            self._frr_failed(f"cannot read FRR's static routes: {exc}")
            return False
        self.frr_known = True
        return True

    def _frr_failed(self, problem: str) -> None:
        if problem != self.frr_problem:
            log.error("%s; the probes go on and the next sync tries again", problem)
        self.frr_problem = problem
        self.metrics.sync_failures.inc()

    async def sync(self, fresh: bool = False) -> None:
        """One pass: decide, change FRR if it differs, read it back, retry a mismatch, report.

        FRR is read first only when ``fresh`` or when the last read failed; otherwise the
        read-back of the last change stands, and the change costs one vtysh call.
        """
        self._choose()
        if (fresh or not self.frr_known) and not await self._read_frr():
            return
        desired = desired_routes(self.config.services, self.choices, self.owned)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(SYNC_ATTEMPTS),
            wait=self.retry_wait,
            sleep=self.sleep,
            retry=tenacity.retry_if_exception_type(RouteError),
            reraise=True,
        )
        change = Change()
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.installed = await self.routes.read()
                    change = reconcile(self.installed, desired, self.config.tag)
                    if change:
                        await self._change(change)
                        self.installed = await self.routes.read()
                        left = reconcile(self.installed, desired, self.config.tag)
                        if left:
                            raise RouteError(f"FRR does not hold what was asked: {_describe(left)}")
        except RouteError as exc:
            self.frr_known = False  # read afresh next time
            self._frr_failed(f"{exc} (after {SYNC_ATTEMPTS} attempts)")
            return
        if self.frr_problem is not None:
            log.warning("FRR is in step again")
        self.frr_problem = None
        self.last_sync = self.clock()
        await self._check_fib()
        if change.conflicts != self.conflicts and change.conflicts:
            log.error(
                "routes configured by hand without tag %d are left alone, and anycastd does not manage them: %s",
                self.config.tag,
                _routes(change.conflicts),
            )
        self.conflicts = change.conflicts

    async def _check_fib(self) -> None:
        """Compare the kernel's FIB with what zebra claims it installed; re-add what diverges.

        A divergent prefix is repaired by removing and adding again one of anycastd's routes
        to it (a missing nexthop's own route when there is one): zebra then installs the
        route afresh. The next sync checks again, so a repair that did not take is reported
        again rather than assumed.
        """
        if self.fib is None:
            return
        prefixes = [p for s in self.config.services for p in s.prefixes]
        try:
            claimed = await self.routes.zebra_fib(prefixes)
            kernel = await asyncio.to_thread(self.fib.read, prefixes)
        except (RouteError, FibError) as exc:
            if str(exc) != self.fib_problem:
                log.error("cannot compare the kernel's FIB with zebra: %s", exc)
            self.fib_problem = str(exc)
            return
        self.fib_problem = None
        found = self._settled(divergence(claimed, kernel))
        if not found:
            if self.divergence:
                log.warning("the kernel's FIB agrees with zebra again")
            self.divergence = []
            return
        self.divergence = found
        self.metrics.fib_divergences.inc(len(found))
        fix = repair(found, self.owned)
        log.error(
            "the kernel's FIB disagrees with zebra: %s; repairing by adding again %s",
            _divergences(found),
            _routes(fix.add) or "nothing anycastd owns (reported only)",
        )
        if fix:
            try:
                await self.routes.apply(fix, self.config.tag)
            except RouteError as exc:
                log.error("the repair was refused: %s", exc)
            self.request_sync()  # check the repair on the next pass

    def _settled(self, found: list[Divergence]) -> list[Divergence]:
        """Of the differences just read, those first seen at least FIB_SETTLE ago and in every read since; a
        check is asked for FIB_SETTLE from now while any newer one is left (see FIB_SETTLE)."""
        now = self.clock()
        self._suspected = {d: self._suspected.get(d, now) for d in found}  # one not read again is forgotten
        settled = [d for d in found if now - self._suspected[d] >= FIB_SETTLE]
        if len(settled) < len(found) and self._recheck is None:
            log.debug("the kernel's FIB differs from zebra, checked again in %g s: %s", FIB_SETTLE, _divergences(found))
            self._recheck = asyncio.get_running_loop().call_later(FIB_SETTLE, self._check_again)
        return settled

    def _check_again(self) -> None:
        self._recheck = None
        self.request_sync()

    async def _change(self, change: Change) -> None:
        log.info("FRR: %s", _describe(change))
        await self.routes.apply(change, self.config.tag)
        self.metrics.route_changes.labels("add").inc(len(change.add))
        self.metrics.route_changes.labels("remove").inc(len(change.remove))

    # control ----------------------------------------------------------------

    async def handle(self, request: Request, peer: Peer) -> Reply:
        if isinstance(request, StatusRequest):
            return StatusReply(self.status(request.service))
        if isinstance(request, WithdrawRequest):
            if request.soft:
                raise ControlError(
                    "--soft keeps a BGP path tagged GRACEFUL_SHUTDOWN, and `anycastd router`'s static routes carry "
                    "no community: drain without --soft (the route is removed)"
                )
            return await self.withdraw(request, peer)
        if isinstance(request, AnnounceRequest):
            return await self.announce(request)
        return await self.check(request)

    def _members_of(self, server: str) -> list[Member]:
        return [m for members in self.members.values() for m in members if m.server.name == server]

    def _server(self, name: str | None, verb: str) -> str:
        known = ", ".join(self.config.server_names)
        if name is None:
            raise ControlError(f"anycastd router {verb}s servers, not services: name one with --server ({known})")
        if not self._members_of(name):
            raise ControlError(f"no server {name!r} (configured: {known})")
        return name

    def _services(self, name: str | None) -> list[RoutedService]:
        return by_name(self.config.services, name)

    async def withdraw(self, request: WithdrawRequest, peer: Peer) -> WithdrawReply:
        name = self._server(request.server, "drain")
        by = who(peer, request.user)
        problem = self.book.drain([name], request.reason, by)
        warnings = []
        if problem is not None:
            warnings.append(f"{problem}; drained now, but a restart of anycastd would route to it again")
        log.warning("%s: drained by %s: %s", name, by, request.reason)
        started = self.clock()
        for member in self._members_of(name):
            self._apply(member.health.drain(request.reason, self.clock()))
        self._choose()  # so that the reply can say what the drain leaves
        ticket = self.request_sync()
        drain = None
        if request.wait:
            ok = await self.wait_synced(ticket, request.timeout or self.config.vtysh.timeout * (SYNC_ATTEMPTS + 1))
            gone = not any(
                r.nexthop in m.server.nexthops and r.prefix in m.service.prefixes
                for m in self._members_of(name)
                for r in self.owned
            )
            drain = DrainOutcome(
                drained=ok and gone,
                verdict="drained" if ok and gone else "timeout",
                method="route",
                waited=round(self.clock() - started, 3),
                packets=None,
                note=f"FRR holds no route via {name}: new queries no longer reach it"
                if ok and gone
                else f"FRR could not be brought in step: {self.frr_problem or 'no sync finished in time'}",
            )
        empty = [s for s, c in self.choices.items() if c is not None and not c.servers]
        if empty:
            warnings.append(f"{', '.join(empty)}: no server carries it now; its route is gone")
        return WithdrawReply((name,), " ".join(warnings) or None, drain)

    async def announce(self, request: AnnounceRequest) -> AnnounceReply:
        if request.service is not None:
            raise ControlError("anycastd router announces servers, not services: use --server NAME or --all")
        names = [self._server(request.server, "announce")] if request.server else list(self.maintenance)
        # the operator vouches for these servers: their flap penalty goes too
        targets = [request.server] if request.server else list(self.config.server_names)

        async def apply(_: str, decision: Decision) -> None:
            self._apply(decision)

        done = await lift_and_forgive(
            self.book,
            names,
            {n: [m.health for m in self._members_of(n)] for n in targets},
            apply,
            everything=request.server is None,
            again="routed again",
            kept="the servers stay drained",
            now=self.clock(),
        )
        self.request_sync()
        return AnnounceReply(done.lifted, done.not_drained, tuple(sorted(done.cleared)))

    async def check(self, request: CheckRequest) -> CheckReply:
        service = self._services(request.service)[0]
        members = self.members[service.name]
        jobs = [(m, i, c) for m in members for i, c in enumerate(m.checks)]
        results = await asyncio.gather(*(self.prober.probe(c, ()) for _, _, c in jobs))
        return CheckReply(
            service.name,
            tuple(
                probe_outcome(i, r, None, self.wall, m.server.name) for (m, i, _), r in zip(jobs, results, strict=True)
            ),
        )

    # reading ----------------------------------------------------------------

    def _member_json(self, m: Member, routed: frozenset[str]) -> dict[str, Any]:
        return {
            "name": m.server.name,
            "address": str(m.server.address),
            "nexthops": [str(n) for n in m.server.nexthops],
            "healthy": m.health.announced,
            "routed": m.server.name in routed,
            **self.writer.health(m.health, m.checks, m.status, self.maintenance.get(m.server.name)),
        }

    def status(self, name: str | None = None) -> dict[str, Any]:
        services = []
        for service in self._services(name):
            routed = servers_routed(service, self.owned)
            choice = self.choices[service.name]
            services.append(
                {
                    "name": service.name,
                    "prefixes": [str(p) for p in service.prefixes],
                    "decided": choice is not None,
                    "degraded": choice.degraded if choice else None,
                    "routed_via": sorted(routed),
                    "servers": [self._member_json(m, routed) for m in self.members[service.name]],
                }
            )
        return self.writer.document(
            "router",
            self.config.source,
            self.book.problem,
            services,
            frr={
                **self.routes.describe(),
                "tag": self.config.tag,
                "in_sync": self.frr_problem is None,
                "problem": self.frr_problem,
                "last_sync": self.writer.wall_of(self.last_sync),
                "conflicts": [str(r) for r in self.conflicts],
                "kernel_agrees": not self.divergence if self.fib_problem is None else None,
                "divergence": [str(d) for d in self.divergence],
                "fib_problem": self.fib_problem,
            },
        )

    # systemd (anycastd.daemons.sdnotify) ----------------------------------------------

    def ready(self) -> bool:
        """Every server has a verdict and one pass over FRR has been made (whether FRR took it or not)."""
        decided = all(c is not None for c in self.choices.values())
        return decided and (self.last_sync is not None or self.frr_problem is not None)

    def summary(self) -> str:
        """One line: the servers each service is routed via, e.g. "dns via s1, s2 (2 of 3)"."""
        parts = []
        for service in self.config.services:
            routed = sorted(servers_routed(service, self.owned))
            choice = self.choices[service.name]
            part = f"{service.name} via {', '.join(routed) or 'nothing'} ({len(routed)} of {len(service.servers)})"
            parts.append(part + (" DEGRADED" if choice is not None and choice.degraded else ""))
        if self.frr_problem is not None:
            parts.append(f"FRR: {self.frr_problem}")
        return "; ".join(parts)

    def alive(self) -> bool:
        return self.liveness()

    def view(self) -> RouterView:
        servers = []
        for service in self.config.services:
            routed = servers_routed(service, self.owned)
            for m in self.members[service.name]:
                servers.append(
                    ServerView(
                        service.name,
                        m.server.name,
                        m.health.state,
                        m.health.announced,
                        m.server.name in routed,
                        m.health.state is State.MAINTENANCE,
                        m.health.damping.penalty(self.clock()) if m.health.damping else 0.0,
                        m.health.suppressed,
                    )
                )
        degraded = {s: c is not None and c.degraded is not None for s, c in self.choices.items()}
        return RouterView(servers, degraded, self.frr_problem is None, not self.divergence)


def _divergences(found: list[Divergence]) -> str:
    return "; ".join(map(str, found))


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _routes(routes: frozenset[StaticRoute] | tuple[StaticRoute, ...]) -> str:
    return ", ".join(str(r) for r in sorted(routes, key=StaticRoute.sort_key))


def _describe(change: Change) -> str:
    parts = []
    if change.remove:
        parts.append("remove " + _routes(change.remove))
    if change.add:
        parts.append("add " + _routes(change.add))
    return "; ".join(parts) or "no change"
