"""The return path: the server's own routes towards its clients follow its live sessions (``return_path``).

Theory of operation
-------------------
A dual-homed server's replies leave by its own routing table, not by BGP. With
the natural setup, an ECMP route via both ToRs, a ToR that dies (or whose link
is cut without a carrier change) swallows the replies hashed onto it for as
long as it is dead, whatever BGP does on the way in. So, where the operator
asks for it, anycastd keeps those routes itself: for each prefix, one kernel
route at ``metric`` via every neighbor of its family that is alive, where
alive is BFD up for a neighbor with BFD and the BGP session up for one
without. With none alive the route goes via all of them, exactly the natural
ECMP route: anycastd then knows nothing better, and the service is withdrawn
anyway. On a clean stop it leaves that natural route behind.

``gateways`` decides (pure); ``ReturnPath`` carries it out through a
``KernelRoutes`` adapter (pyroute2, or in memory for tests), when a BFD or BGP
session changes (``wake``) and every ``resync`` seconds, which also repairs a
route someone else changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from anycastd.config.sidecar import Neighbor, ReturnPathSettings
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.errors import AnycastdError

log = logging.getLogger(__name__)

#: How often the routes are written again even when nothing changed (a hand edit, a restarted network stack).
RESYNC = 5.0


def alive(neighbor: Neighbor, bgp: Mapping[str, str], bfd: Mapping[str, str]) -> bool:
    """BFD up where the session has BFD (it says whether the router forwards), else the BGP session up."""
    states = bfd if neighbor.bfd is not None else bgp
    return states.get(str(neighbor.address)) == "up"


def gateways(
    prefix: IPNetwork, neighbors: Sequence[Neighbor], bgp: Mapping[str, str], bfd: Mapping[str, str]
) -> tuple[IPAddress, ...]:
    """The next hops of ``prefix``'s route: its family's live neighbors, or all of them when none is live."""
    family = [n for n in neighbors if n.address.version == prefix.version]
    live = [n for n in family if alive(n, bgp, bfd)]
    return tuple(sorted({n.address for n in live or family}, key=int))


class ReturnRouteError(AnycastdError):
    """The kernel refused a return-path route."""


class KernelRoutes(Protocol):
    async def replace(self, prefix: IPNetwork, metric: int, via: Sequence[IPAddress]) -> None:
        """The route to ``prefix`` at ``metric`` is via ``via`` (ECMP when several); ReturnRouteError if not."""
        ...


class NetlinkRoutes:
    async def replace(self, prefix: IPNetwork, metric: int, via: Sequence[IPAddress]) -> None:
        family = socket.AF_INET6 if prefix.version == 6 else socket.AF_INET
        hops: dict[str, Any] = (
            {"gateway": str(via[0])} if len(via) == 1 else {"multipath": [{"gateway": str(g)} for g in via]}
        )
        try:
            async with AsyncIPRoute() as ipr:
                await ipr.route("replace", dst=str(prefix), family=family, priority=metric, **hops)
        except (OSError, NetlinkError) as exc:
            raise ReturnRouteError(f"the route to {prefix} via {', '.join(map(str, via))}: {exc}") from None


class InMemoryRoutes:
    """For tests: the routes as a dict, and a failure when asked for."""

    def __init__(self) -> None:
        self.routes: dict[tuple[IPNetwork, int], tuple[IPAddress, ...]] = {}
        self.broken: str | None = None
        self.calls = 0

    async def replace(self, prefix: IPNetwork, metric: int, via: Sequence[IPAddress]) -> None:
        self.calls += 1
        if self.broken:
            raise ReturnRouteError(self.broken)
        self.routes[(prefix, metric)] = tuple(via)


class ReturnPath:
    def __init__(
        self,
        settings: ReturnPathSettings,
        neighbors: Sequence[Neighbor],
        bgp: Callable[[], Mapping[str, str]],
        bfd: Callable[[], Mapping[str, str]],
        routes: KernelRoutes,
        *,
        resync: float = RESYNC,
    ) -> None:
        self.settings = settings
        self.neighbors = tuple(neighbors)
        self.bgp = bgp
        self.bfd = bfd
        self.routes = routes
        self.resync = resync
        #: What the kernel was last told for each prefix (None: not yet, or the last attempt failed).
        self.installed: dict[IPNetwork, tuple[IPAddress, ...] | None] = dict.fromkeys(settings.prefixes)
        self.problem: str | None = None
        self.changes = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A session changed: decide again now."""
        self._wake.set()

    def wanted(self) -> dict[IPNetwork, tuple[IPAddress, ...]]:
        bgp, bfd = self.bgp(), self.bfd()
        return {p: gateways(p, self.neighbors, bgp, bfd) for p in self.settings.prefixes}

    async def reconcile(self, force: bool = False) -> None:
        for prefix, via in self.wanted().items():
            if via == self.installed[prefix] and not force:
                continue
            try:
                await self.routes.replace(prefix, self.settings.metric, via)
            except ReturnRouteError as exc:
                if self.problem != str(exc):
                    log.error("return path: %s", exc)
                self.problem = str(exc)
                self.installed[prefix] = None
                continue
            if via != self.installed[prefix]:
                self.changes += 1
                every = gateways(prefix, self.neighbors, {}, {})
                level = logging.INFO if via == every else logging.WARNING  # a ToR left out is worth a look
                log.log(level, "return path to %s: via %s", prefix, ", ".join(map(str, via)))
            self.installed[prefix] = via
            self.problem = None

    async def run(self) -> None:
        """Until cancelled: decide on every wake, and write everything again every resync."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            force = loop.time() - last >= self.resync
            await self.reconcile(force)
            if force:
                last = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, last + self.resync - loop.time()))
            self._wake.clear()

    async def close(self) -> None:
        """Stopping: every prefix via all its neighbors again, the natural ECMP route anycastd found."""
        for prefix in self.settings.prefixes:
            via = gateways(prefix, self.neighbors, {}, {})
            with contextlib.suppress(ReturnRouteError):
                await self.routes.replace(prefix, self.settings.metric, via)

    def describe(self) -> dict[str, Any]:
        return {
            "metric": self.settings.metric,
            "routes": {str(p): [str(g) for g in via] if via is not None else None for p, via in self.installed.items()},
            "changes": self.changes,
            "problem": self.problem,
        }
