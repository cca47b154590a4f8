"""The builders the tests share: configurations, in-memory daemons, scripted probers, the CLI.

Test modules import from here (and from the fakes beside them: tests/unit/fake_time.py,
responder.py, fake_exabgp.py), never from one another.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tenacity
import yaml

from anycastd.announce import InMemoryAnnouncer
from anycastd.announce.frr import InMemoryRoutes
from anycastd.checks.dns import ProbeResult
from anycastd.config.checks import Check
from anycastd.config.router import RouterConfig, parse_router
from anycastd.config.sidecar import parse
from anycastd.control.protocol import CheckRequest, ControlError, Reply, Request, StatusReply
from anycastd.control.server import ControlServer
from anycastd.core.health import Outcome
from anycastd.core.net import IPAddress
from anycastd.core.routes import Installed, StaticRoute
from anycastd.daemons.router import Router
from anycastd.daemons.sidecar import Sidecar
from anycastd.daemons.skeleton import Liveness
from anycastd.daemons.state import InMemoryStore
from anycastd.errors import ConfigError
from anycastd.peer import Peer
from anycastd.watch.address import InMemoryAddresses
from anycastd.watch.drain import InMemoryMeter
from anycastd.watch.fib import InMemoryFib
from tests.unit.fake_time import FakeTime

GOOD = """\
router_id: 192.0.2.10
local_asn: 65001
neighbors:
  - address: 192.0.2.9
    peer_asn: 65000
    local_address: 192.0.2.10
  - address: 2001:db8:0:1::1
    peer_asn: 65000
    local_address: 2001:db8:0:1::2
    md5_password: s3cret
services:
  dns:
    prefixes: [203.0.113.53/32, 2001:db8::53/128]
    checks:
      - address: 192.0.2.10
        qname: health.example
        qtype: txt
        answer: healthy
        interval: 0.5
        timeout: 0.25
"""


Key = list[str | int]


def with_value(text: str, key: Key, value: Any) -> str:
    """``text`` (YAML) with ``key`` set to ``value`` (mappings made on the way)."""
    data = copy.deepcopy(yaml.safe_load(text))
    node = data
    for part in key[:-1]:
        if isinstance(node, dict) and part not in node:
            node[part] = {}
        node = node[part]
    node[key[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


def problems_of(text: str, parse: Callable[[str, str], object]) -> list[str]:
    """The problems, without their file:line:column (which depend on the dump's layout)."""
    with pytest.raises(ConfigError) as info:
        parse(text, "f.yaml")
    return [re.sub(r"^f\.yaml(:\d+)*: ", "", p) for p in info.value.problems]


OK = ProbeResult(Outcome.OK, "NOERROR in 1 ms", 0.001, "192.0.2.10")
SOFT = ProbeResult(Outcome.FAIL, "timeout after 250 ms", None, "192.0.2.10")
HARD = ProbeResult(Outcome.HARD_FAIL, "connection refused", None, "192.0.2.10")


class Probes:
    """A prober that answers OK for every check; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        self.calls += 1
        return OK

    async def probe_each(self, check: Check, targets: Sequence[IPAddress]) -> list[ProbeResult]:
        self.calls += 1
        return [OK] * len(targets)


def make_sidecar(
    text: str = GOOD, store: InMemoryStore | None = None, meter: InMemoryMeter | None = None
) -> tuple[Sidecar, InMemoryAnnouncer, InMemoryStore, FakeTime]:
    fake = FakeTime()
    announcer = InMemoryAnnouncer()
    store = store if store is not None else InMemoryStore()
    sidecar = Sidecar(
        parse(text, "anycastd.yaml"),
        announcer,
        InMemoryAddresses(),
        Probes(),
        Liveness(fake.clock),
        store=store,
        meter=meter or InMemoryMeter(),
        clock=fake.clock,
        wall=lambda: 1795000000.0 + fake.now,
        sleep=fake.sleep,
    )
    return sidecar, announcer, store, fake


async def bring_up(sidecar: Sidecar, name: str) -> None:
    service = sidecar.config.service(name)
    for _ in range(service.checks[0].rise):
        await sidecar.apply(service, sidecar.health[name].feed(0, OK.for_health(), sidecar.clock()))


TAG = 5353
TEXT = """\
router:
  tag: 5353
services:
  dns:
    prefixes: [203.0.113.53/32, 2001:db8::53/128]
    checks: [{rise: 2, fall: 2}]
    servers:
      - {name: ns1, address: 192.0.2.2, nexthops: [192.0.2.2, "2001:db8:0:1::2"]}
      - {name: ns2, address: 192.0.2.10, nexthops: [192.0.2.10, "2001:db8:0:2::2"]}
      - {name: ns3, address: 192.0.2.18, nexthops: [192.0.2.18, "2001:db8:0:3::2"]}
"""
CONFIG = parse_router(TEXT)
ADDRESS = {"ns1": "192.0.2.2", "ns2": "192.0.2.10", "ns3": "192.0.2.18"}
NEXTHOPS = {
    "ns1": ("192.0.2.2", "2001:db8:0:1::2"),
    "ns2": ("192.0.2.10", "2001:db8:0:2::2"),
    "ns3": ("192.0.2.18", "2001:db8:0:3::2"),
}


def ok(server: str) -> ProbeResult:
    return ProbeResult(Outcome.OK, "NOERROR in 1 ms", 0.001, ADDRESS[server])


def hard(server: str) -> ProbeResult:
    return ProbeResult(Outcome.HARD_FAIL, f"{ADDRESS[server]}: connection refused", None, ADDRESS[server], "refused")


def soft(server: str) -> ProbeResult:
    return ProbeResult(Outcome.FAIL, f"{ADDRESS[server]}: timeout", None, ADDRESS[server], "timeout")


def via(*servers: str) -> set[StaticRoute]:
    out = set()
    for server in servers:
        v4, v6 = NEXTHOPS[server]
        out.add(StaticRoute(ipaddress.ip_network("203.0.113.53/32"), ipaddress.ip_address(v4)))
        out.add(StaticRoute(ipaddress.ip_network("2001:db8::53/128"), ipaddress.ip_address(v6)))
    return out


def owned(*servers: str) -> list[Installed]:
    return [Installed(r, TAG) for r in via(*servers)]


class RouterProber:
    """Answers for each server what the test says it is now."""

    def __init__(self) -> None:
        self.now: dict[str, Callable[[str], ProbeResult]] = dict.fromkeys(ADDRESS, ok)
        self.asked: list[str] = []

    async def probe(self, check: Check, service_addresses: Sequence[IPAddress]) -> ProbeResult:
        assert not service_addresses  # the router probes admin addresses only
        server = next(n for n, a in ADDRESS.items() if a == str(check.address))
        self.asked.append(server)
        return self.now[server](server)


def make_router(
    frr: InMemoryRoutes | None = None,
    config: RouterConfig = CONFIG,
    store: InMemoryStore | None = None,
    fib: InMemoryFib | None = None,
) -> tuple[Router, InMemoryRoutes, RouterProber, InMemoryStore]:
    frr = frr or InMemoryRoutes()
    store = store if store is not None else InMemoryStore()
    prober = RouterProber()
    fake = FakeTime()
    router = Router(
        config,
        frr,
        prober,
        store=store,
        clock=fake.clock,
        wall=lambda: 1_800_000_000.0,
        sleep=fake.sleep,
        jitter=lambda _: 0.0,
        retry_wait=tenacity.wait_none(),
        fib=fib,
    )
    return router, frr, prober, store


async def rounds(router: Router, prober: RouterProber, n: int = 1) -> None:
    """n probes of every server, one interval apart, each fed to the health core, then one sync (what the loops
    and syncer do)."""
    for _ in range(n):
        for members in router.members.values():
            for m in members:
                result = await prober.probe(m.checks[0], ())
                router._apply(m.health.feed(0, result.for_health(), router.clock()))
        await router.sleep(CONFIG.services[0].checks[0].interval)
    await router.sync()


class FakeController:
    """Answers from a script; records what reached it (only decoded requests can)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Request, Peer]] = []
        self.replies: dict[str, Reply] = {}

    async def handle(self, request: Request, peer: Peer) -> Reply:
        self.seen.append((request, peer))
        if isinstance(request, CheckRequest) and request.service == "nope":
            raise ControlError("no service 'nope' (configured: dns)")
        if isinstance(request, CheckRequest) and request.service == "bug":
            raise RuntimeError("a bug")
        return self.replies.get(type(request).__name__, StatusReply({"echo": type(request).__name__, "services": []}))


class Served:
    """A ControlServer on its own event loop in a thread, as the daemon runs it."""

    def __init__(self, path: Path, controller: FakeController) -> None:
        self.path = path
        self.controller = controller
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, controller)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def ctl(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anycastd.cli.anycastctl", "--socket", str(path), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "SUDO_USER": "alice"},
    )


@dataclass
class Row:
    variant: str = ""
    fault: str = ""
    expected: str = ""
    bound: float | None = None  # seconds; None where the row is a state, not a time
    measured: dict[str, float] = field(default_factory=dict)  # what was timed, in seconds
    test: str = ""
    outcome: str = "not run"

    def time(self, what: str, seconds: float) -> float:
        self.measured[what] = round(seconds, 3)
        return seconds
