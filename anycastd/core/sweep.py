"""Which service addresses a probe round asks while every service of its check is up.

Theory of operation
-------------------
A DNS check asks the resolver's admin address and every service address, so that a resolver
that does not answer on a service address is never announced. A hundred services of one check
make that 201 queries a round, five rounds a second at the default interval: a thousand
queries a second to the local resolver, and most of the sidecar's CPU (bench/scale.py), to
learn again what the round before learnt. What makes one service address stop answering while
the admin address answers is configuration (a view, an ACL, an address the resolver no longer
listens on), not a crash: a dead or frozen resolver fails on the admin address, and its
sockets say so at once (anycastd.watch.sockdiag).

So a round asks every address while any member of the check is not up (rising: a rise still
needs every address to pass; falling, down), while it confirms a failure, and after an event
woke it. Once every member is up, a *steady* round asks the admin address and the next slice
of the service addresses, in turn (``Sweep``): each is asked at least once every ``SWEEP``
seconds, rounded up to a whole interval, and a round asks at least ``SWEEP_MIN`` of them, so
that up to ``SWEEP_MIN`` service addresses (four dual-stack services) every round asks them
all, as before. A failure on an address of the slice makes its member fall, and the round that
confirms the fall asks them all (anycastd.daemons.skeleton).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: A steady round asks each service address at least once in this many seconds (rounded up to an interval).
SWEEP = 1.0
#: ... and at least this many of them: fewer are all asked every round.
SWEEP_MIN = 8


def slice_size(count: int, interval: float, sweep: float = SWEEP) -> int:
    """How many of ``count`` service addresses a steady round of a check probed every ``interval`` asks, for
    each to be asked at least once every ``sweep`` seconds (rounded up to an interval)."""
    return min(count, max(SWEEP_MIN, math.ceil(count * interval / sweep)))


@dataclass
class Sweep:
    """Where the next steady round's slice starts: the slices go round the addresses, each in turn."""

    at: int = 0

    def next(self, addresses: Sequence[T], interval: float) -> list[T]:
        """The service addresses this steady round asks: the next ``slice_size`` of them, wrapping."""
        count = len(addresses)
        size = slice_size(count, interval)
        if size >= count:
            return list(addresses)
        start = self.at % count
        self.at = (start + size) % count
        return [addresses[(start + k) % count] for k in range(size)]
