"""What the router's kernel actually forwards on: its FIB, read with pyroute2.

FRR installs ECMP routes as nexthop objects; with the kernel's
``nexthop_compat_mode`` (on by default) route lookups and dumps also carry the classic
RTA_GATEWAY / RTA_MULTIPATH attributes, which is what is read here.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from types import TracebackType

from pyroute2 import NetNS

from anycastd.watch.fib import read_weights


class Fib:
    """An open netlink socket in one namespace; cheap to poll (a lookup, under 1 ms a read: anycastd.watch.fib)."""

    def __init__(self, netns: str) -> None:
        self._ipr = NetNS(netns)

    def __enter__(self) -> Fib:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ipr.close()

    def nexthops(self, prefix: str) -> frozenset[str]:
        """The gateways the kernel holds for exactly ``prefix`` in the main table."""
        return frozenset(self.weights(prefix))

    def weights(self, prefix: str) -> dict[str, int]:
        """Each gateway's weight for exactly ``prefix`` in the main table (1 each for plain ECMP)."""
        net = ipaddress.ip_network(prefix)
        return {str(hop): weight for hop, weight in read_weights(self._ipr, [net])[net].items()}


class FibWatch:
    """Records every change of one prefix's nexthops, sampled every 2 ms in a thread of its own.

    A flap shorter than the sampling period could be missed; FRR installs
    routes far slower than that, so any withdraw-and-announce shows up.
    """

    def __init__(self, netns: str, prefix: str, period: float = 0.002) -> None:
        self.netns = netns
        self.prefix = prefix
        self.period = period
        self.changes: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> FibWatch:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with Fib(self.netns) as fib:  # a netlink socket is not shared between threads
            last: frozenset[str] | None = None
            while not self._stop.is_set():
                hops = fib.nexthops(self.prefix)
                if hops != last:
                    self.changes.append((time.monotonic(), hops))
                    last = hops
                self._ready.set()
                time.sleep(self.period)

    def seen(self) -> list[frozenset[str]]:
        """Every distinct nexthop set in order; one element means nothing changed."""
        return [hops for _, hops in self.changes]
