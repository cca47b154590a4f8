"""Route injection backends, behind one Protocol.

An announcer holds the *desired* state (which services are announced) and
makes the world match it, also after its own connection to the routing daemon
was lost and came back. Callers say what they want; they never replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from anycastd.core.attributes import PLAIN, RouteAttributes
from anycastd.core.supervision import ChildState

if TYPE_CHECKING:  # the ExaBGP helper lives in this package and must start fast
    from anycastd.core.net import IPNetwork


class Announcer(Protocol):
    @property
    def state(self) -> ChildState:
        """The routing daemon's own state (anycastd.core.supervision): metrics and status show it."""
        ...

    @property
    def restarts(self) -> int:
        """How many times the routing daemon has been started again."""
        ...

    @property
    def last_answer(self) -> float | None:
        """Unix time of the routing daemon's last answer to anything; None before the first."""
        ...

    async def start(self) -> None:
        """Start the backend. Nothing is announced yet."""
        ...

    async def set_announced(
        self, service: str, prefixes: Sequence[IPNetwork], announced: bool, attributes: RouteAttributes = PLAIN
    ) -> None:
        """Make ``service``'s prefixes announced (with ``attributes``) or withdrawn; kept as desired state."""
        ...

    def want(
        self, service: str, prefixes: Sequence[IPNetwork], announced: bool, attributes: RouteAttributes = PLAIN
    ) -> None:
        """``set_announced``'s desired state alone: what the next ``flush`` carries out, with every other service's
        change made meanwhile, in one batch. Raises AnnounceError on attributes the backend cannot send."""
        ...

    async def flush(self) -> None:
        """Make the routing daemon match every desired state given so far."""
        ...

    async def close(self) -> None:
        """Withdraw everything and stop the backend."""
        ...

    def sessions(self) -> dict[str, str]:
        """The BGP session state by neighbor address, as last reported."""
        ...

    def announced_prefixes(self) -> frozenset[IPNetwork]:
        """What the routing daemon has confirmed it announces now (not merely what is desired)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The backend's section of the status document (`anycastctl status --json`: docs/operations.md)."""
        ...


class InMemoryAnnouncer:
    """For tests: records what is announced and every call made."""

    def __init__(self) -> None:
        self.announced: dict[str, tuple[IPNetwork, ...]] = {}
        self.calls: list[tuple[str, bool]] = []
        self.tagged: list[tuple[bool, tuple[str, ...]]] = []  # each call's (announced, communities)
        self.communities: dict[str, tuple[str, ...]] = {}
        self.attributes: dict[str, RouteAttributes] = {}
        self.flushes = 0
        self.started = False
        self.closed = False
        self.state = ChildState.UP
        self.restarts = 0
        self.last_answer: float | None = None

    async def start(self) -> None:
        self.started = True

    async def set_announced(
        self, service: str, prefixes: Sequence[IPNetwork], announced: bool, attributes: RouteAttributes = PLAIN
    ) -> None:
        self.want(service, prefixes, announced, attributes)
        await self.flush()

    async def flush(self) -> None:
        self.flushes += 1

    def want(
        self, service: str, prefixes: Sequence[IPNetwork], announced: bool, attributes: RouteAttributes = PLAIN
    ) -> None:
        self.calls.append((service, announced))
        self.tagged.append((announced, attributes.communities))
        if announced:
            self.announced[service] = tuple(prefixes)
            self.communities[service] = attributes.communities
            self.attributes[service] = attributes
        else:
            self.announced.pop(service, None)
            self.communities.pop(service, None)
            self.attributes.pop(service, None)

    async def close(self) -> None:
        self.announced.clear()
        self.closed = True

    def sessions(self) -> dict[str, str]:
        return {}

    def announced_prefixes(self) -> frozenset[IPNetwork]:
        return frozenset(p for prefixes in self.announced.values() for p in prefixes)

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory", "restarts": 0, "connected": self.started and not self.closed}
