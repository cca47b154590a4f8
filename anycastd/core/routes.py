"""The router-side variant's decisions: which static routes should exist. Pure: no I/O, no clock.

Theory of operation
-------------------
``anycastd router`` keeps FRR's static routes to each service prefix equal
to "one route via each healthy server". Two decisions live here, apart
from the loop that probes and the adapter that runs vtysh:

*Which servers carry a service* (``Selection``). While at least one server
is healthy and not drained, exactly those do. When none is, a router
without a route drops every query (a black hole), which is worse than
sending queries to servers that may be failing: so with the ``keep``
policy the routes stay, minus any server an operator drained, and the
service is marked *degraded*. Which routes: servers lost within ``window``
of each other are one *cascade*, one event with one cause, and what stays
is the set from before the cascade began. When a bad zone or a dead
upstream fails every server at once, their verdicts still arrive apart: a
probe round apart when all are refused alike, and up to ``fall`` probes
apart when one is refused at once and another only times out (the
router's window is that bound: RoutedService.cascade_window). Keeping only
the last one to fail would pour the whole service onto one failing server.
A server lost long after the others (more than the window) starts a
cascade of its own: it was the last healthy one, and it alone is kept.
``now`` is the time of the verdict: the router chooses as each verdict
comes, not when FRR is next free to take a change. ``withdraw``
removes the routes instead. Nothing is decided until every server has given a verdict
(``ServiceHealth.decided``): a restarted anycastd must not remove a route
only because its first probe has not passed ``rise`` times yet.

*What to change* (``reconcile``, ``repair``): pure functions from the routes
wanted and the routes found to a ``Change`` (routes to add and to remove).
FRR's command dialect lives only in its adapter (anycastd.announce.frr),
which reads the routes and carries a Change out. FRR is read back as a list of
static routes with their tags. A route carrying anycastd's tag is
anycastd's: it is removed when not wanted, whatever its prefix. A route
without the tag is the operator's and is never touched, not even when
anycastd wants the same prefix and nexthop: FRR keys a static route by
prefix and nexthop, so adding ours would re-tag theirs, and removing ours
would remove theirs. Such a route is reported as a conflict instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from anycastd.core.net import IPAddress, IPNetwork


class RoutedServer(Protocol):
    """A server as the routes see it (anycastd.config.router.Server)."""

    @property
    def name(self) -> str: ...

    def nexthop_for(self, prefix: IPNetwork) -> IPAddress: ...


class RoutedService(Protocol):
    """A service as the routes see it (anycastd.config.router.RoutedService)."""

    @property
    def name(self) -> str: ...

    @property
    def prefixes(self) -> Sequence[IPNetwork]: ...

    @property
    def servers(self) -> Sequence[RoutedServer]: ...


@dataclass(frozen=True)
class Divergence:
    """One prefix on which the kernel and zebra disagree."""

    prefix: IPNetwork
    missing: frozenset[IPAddress]  # zebra says installed, the kernel lacks
    extra: frozenset[IPAddress]  # the kernel forwards to, zebra does not say so

    def __str__(self) -> str:
        parts = []
        if self.missing:
            parts.append("the kernel lacks " + ", ".join(sorted(map(str, self.missing))))
        if self.extra:
            parts.append("the kernel also forwards to " + ", ".join(sorted(map(str, self.extra))))
        return f"{self.prefix}: {' and '.join(parts)}"


@dataclass(frozen=True)
class StaticRoute:
    prefix: IPNetwork
    nexthop: IPAddress

    def sort_key(self) -> tuple[int, int, int, int]:
        """IPv4 before IPv6 (ipaddress refuses to compare across families)."""
        return (self.prefix.version, int(self.prefix.network_address), self.prefix.prefixlen, int(self.nexthop))

    def __str__(self) -> str:
        return f"{self.prefix} via {self.nexthop}"


@dataclass(frozen=True)
class Installed:
    """One static route as FRR's running configuration shows it."""

    route: StaticRoute
    tag: int | None


def routes_via(service: RoutedService, servers: Iterable[str]) -> frozenset[StaticRoute]:
    """One route per service prefix via each named server (its nexthop of the prefix's family)."""
    chosen = set(servers)
    return frozenset(
        StaticRoute(prefix, server.nexthop_for(prefix))
        for server in service.servers
        if server.name in chosen
        for prefix in service.prefixes
    )


def servers_routed(service: RoutedService, owned: Iterable[StaticRoute]) -> frozenset[str]:
    """The servers that have every one of the service's routes among ``owned``."""
    have = set(owned)
    return frozenset(s.name for s in service.servers if routes_via(service, [s.name]) <= have)


@dataclass(frozen=True)
class Change:
    add: tuple[StaticRoute, ...] = ()
    remove: tuple[StaticRoute, ...] = ()
    #: Wanted routes that exist without anycastd's tag: the operator's, left alone.
    conflicts: tuple[StaticRoute, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def reconcile(installed: Sequence[Installed], desired: Iterable[StaticRoute], tag: int) -> Change:
    """What turns ``installed`` into ``desired`` without touching a route anycastd does not own."""
    wanted = set(desired)
    owned = {i.route for i in installed if i.tag == tag}
    foreign = {i.route for i in installed if i.tag != tag}
    return Change(
        add=tuple(sorted(wanted - owned - foreign, key=StaticRoute.sort_key)),
        remove=tuple(sorted(owned - wanted, key=StaticRoute.sort_key)),
        conflicts=tuple(sorted(wanted & foreign, key=StaticRoute.sort_key)),
    )


@dataclass(frozen=True)
class Choice:
    servers: frozenset[str]
    #: Why the service is degraded (no healthy server), or None.
    degraded: str | None = None


@dataclass
class Selection:
    """Which servers carry one service; remembers, for the ``keep`` policy, the set from before a cascade."""

    service: str
    keep_when_all_down: bool = True
    window: float = 0.0  # servers lost within it of each other are one cascade
    chosen: frozenset[str] = field(default_factory=frozenset)  # the servers of the last choice
    before: frozenset[str] = field(default_factory=frozenset)  # the servers chosen before this cascade began
    last: frozenset[str] = field(default_factory=frozenset)  # the last set of healthy, undrained servers
    up: frozenset[str] = field(default_factory=frozenset)  # healthy and undrained, at the last choice
    lost_at: float | None = None  # when a server last failed out of ``up``
    kept: frozenset[str] | None = None  # while none is up: what is kept (before drains), else None

    def hold(self, servers: frozenset[str]) -> None:
        """Start from the routes FRR holds (a restarted anycastd): they are what is kept if none passes."""
        self.chosen = self.before = self.last = servers

    def choose(self, healthy: Iterable[str], drained: Iterable[str], now: float) -> Choice:
        out = frozenset(drained)
        up = frozenset(healthy) - out
        failed = self.up - up - out  # a drain is not a failure, and neither starts nor extends a cascade
        if failed:
            if self.lost_at is None or now - self.lost_at > self.window:
                self.before = self.chosen  # the first failure in a round: a cascade begins
            self.lost_at = now
        self.up = up
        if up:
            self.last, self.kept = up, None
            self.chosen = up
            return Choice(up)
        if failed:
            self.kept = self.before  # failures emptied it: what was there before they began
        elif self.kept is None:
            self.kept = self.last  # drains emptied it: the last healthy set, which is drained
        self.chosen = self.kept - out if self.keep_when_all_down else frozenset()
        return Choice(self.chosen, self._why())

    def _why(self) -> str:
        if not self.keep_when_all_down:
            return "no server passes its probes: the service has no route"
        if self.chosen:
            names = ", ".join(sorted(self.chosen))
            return f"no server passes its probes; keeping the routes from before the failures began ({names})"
        if self.kept:
            return "every server of the last healthy set is drained: the service has no route"
        return "no server passes its probes: the service has no route"


def desired_routes(
    services: Sequence[RoutedService], choices: Mapping[str, Choice | None], owned: Iterable[StaticRoute]
) -> frozenset[StaticRoute]:
    """The routes wanted now. A service without a choice yet (not every verdict in) keeps what it has."""
    have = set(owned)
    wanted: set[StaticRoute] = set()
    for service in services:
        choice = choices.get(service.name)
        if choice is None:
            wanted |= {r for r in have if r.prefix in service.prefixes}
        else:
            wanted |= routes_via(service, choice.servers)
    return frozenset(wanted)


def repair(found: Iterable[Divergence], owned: Iterable[StaticRoute]) -> Change:
    """Re-add, for each prefix where the kernel and zebra disagree, one of anycastd's routes to it.

    Removing and adding a route again makes zebra install the prefix afresh. The route of a
    nexthop the kernel lacks is the one re-added when anycastd owns it; otherwise any one of
    anycastd's routes to the prefix. A prefix anycastd owns no route to is left alone.
    """
    mine = sorted(owned, key=StaticRoute.sort_key)
    bounce: list[StaticRoute] = []
    for d in found:
        to_prefix = [r for r in mine if r.prefix == d.prefix]
        bounce += [r for r in to_prefix if r.nexthop in d.missing] or to_prefix[:1]
    return Change(add=tuple(bounce), remove=tuple(bounce))
