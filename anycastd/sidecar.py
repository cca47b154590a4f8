"""The per-server daemon loop: probe, feed the health core, carry out its actions.

Each check of each service runs in its own task on its own schedule. The
tasks decide nothing: ``health.ServiceHealth`` decides, this module does.
Every loop iteration also beats a ``Liveness``; the announcer heartbeats its
watchdog only while every loop is beating, so a stuck loop withdraws routes
(fail-closed) instead of leaving a stale announcement behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from anycastd.address import Addresses
from anycastd.announce import Announcer
from anycastd.checks.dns import Prober, ProbeResult
from anycastd.config import Config, DnsCheck, Service
from anycastd.errors import AnnounceError
from anycastd.health import Announce, Decision, ServiceHealth, State, Thresholds

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Added to a check's interval + timeout before its loop counts as stalled.
STALL_SLACK = 1.0


class Liveness:
    """Deadlines by which each loop must beat again."""

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


@dataclass
class CheckStatus:
    last: ProbeResult | None = None
    probes: int = 0
    failures: int = 0


class Sidecar:
    def __init__(
        self,
        config: Config,
        announcer: Announcer,
        addresses: Addresses,
        prober: Prober,
        liveness: Liveness,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[float], float] = lambda interval: random.uniform(0, interval),  # noqa: S311 (spreading load, not secrecy)
    ) -> None:
        self.config = config
        self.announcer = announcer
        self.addresses = addresses
        self.prober = prober
        self.liveness = liveness
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.health: dict[str, ServiceHealth] = {
            s.name: ServiceHealth.create(s.name, [Thresholds(c.rise, c.fall, c.fall_hard) for c in s.checks])
            for s in config.services
        }
        self.checks: dict[tuple[str, int], CheckStatus] = {
            (s.name, i): CheckStatus() for s in config.services for i in range(len(s.checks))
        }

    async def bind_addresses(self) -> None:
        """Bind every service address; raises AddressError before anything else has started."""
        for service in self.config.services:
            await self.addresses.ensure(service.interface, service.prefixes)

    async def run(self, stop: asyncio.Event) -> None:
        await self.bind_addresses()
        await self.announcer.start()
        tasks = [
            asyncio.create_task(self._check_loop(service, index, check), name=f"{service.name}/checks[{index}]")
            for service in self.config.services
            for index, check in enumerate(service.checks)
        ]
        try:
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping:
                    task.result()  # a loop only ends by raising: let it be seen
        finally:
            for task in [*tasks, stopping]:
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
            log.info("withdrawing everything and stopping ExaBGP")
            await self.announcer.close()

    async def _check_loop(self, service: Service, index: int, check: DnsCheck) -> None:
        key = f"{service.name}/checks[{index}]"
        stall_after = check.interval + check.timeout + STALL_SLACK
        self.liveness.beat(key, stall_after)
        # Spread the first probes so that many checks do not fire in step.
        await self.sleep(self.jitter(check.interval))
        next_at = self.clock()
        status = self.checks[(service.name, index)]
        while True:
            self.liveness.beat(key, stall_after)
            result = await self.prober.probe(check, service.host_addresses)
            status.last = result
            status.probes += 1
            status.failures += 0 if result.ok else 1
            decision = self.health[service.name].feed(index, result.for_health(), self.clock())
            await self.apply(service, decision)
            next_at += check.interval
            delay = next_at - self.clock()
            if delay < 0:  # a probe ran late: do not burst to catch up
                next_at, delay = self.clock(), 0.0
            await self.sleep(delay)

    async def apply(self, service: Service, decision: Decision) -> None:
        for transition in decision.transitions:
            level = logging.WARNING if transition.new in (State.DOWN, State.FALLING) else logging.INFO
            log.log(level, "%s", transition)
        for action in decision.actions:
            announced = isinstance(action, Announce)
            try:
                await self.announcer.set_announced(service.name, service.prefixes, announced)
            except AnnounceError as exc:
                log.error("%s: could not %s: %s", service.name, "announce" if announced else "withdraw", exc)
