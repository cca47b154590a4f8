"""Prometheus metrics: probe results as they happen, state read at scrape time.

Counters and the latency histogram are updated by the loop as probes finish.
Everything that is a *state* (service state, announced, maintenance, BGP
sessions) is read from the daemon when Prometheus scrapes, through a
``View`` callback, so there is no second copy of the state to keep in step.
Each ``Metrics`` has its own registry: no module-level singletons. It holds the
standard process, platform and garbage-collector collectors too, and
``anycastd_build_info``. Every labelled counter is created at zero for each label
set it can take as soon as the services are known (``declare``), so that an alert
on ``rate(...)`` or ``increase(...)`` holds from the first scrape instead of only
after the first failure. Names follow Prometheus's conventions: counters end in
``_total``, and units are in the name (``_seconds``).
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anycastd import __version__
from anycastd.checks.dns import FAILURE_KINDS, ProbeResult
from anycastd.core.degradation import Level
from anycastd.core.health import State
from anycastd.core.net import IPAddress
from anycastd.core.supervision import ChildState
from anycastd.errors import AnycastdError

log = logging.getLogger(__name__)

#: The states of ExaBGP's gauge: a supervised child's (anycastd.core.supervision).
EXABGP_STATES = tuple(str(s) for s in ChildState)
#: DNS answers on a healthy LAN take well under a millisecond; a timeout is the top bucket.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class ServiceView:
    name: str
    state: State
    announced: bool
    maintenance: bool
    graceful_shutdown: bool = False  # announced, tagged GRACEFUL_SHUTDOWN, because it fails
    penalty: float = 0.0  # flap damping's penalty now
    suppressed: bool = False  # flap damping holds it back
    weight: int | None = None  # the weight its path is announced with; None: none (every path weighs the same)


def damping_families(label: str) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """Flap damping's penalty and suppression, the same names in both daemons; the router adds a server label."""
    labels = ["service", label] if label else ["service"]
    penalty = GaugeMetricFamily(
        "anycastd_damping_penalty",
        "flap damping's penalty now (each failure adds to it; it halves every half_life)",
        labels=labels,
    )
    suppressed = GaugeMetricFamily(
        "anycastd_damping_suppressed",
        "1 while flap damping keeps a recovered resolver out until its penalty decays",
        labels=labels,
    )
    return penalty, suppressed


@dataclass(frozen=True)
class View:
    services: list[ServiceView] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)
    exabgp_restarts: int = 0
    exabgp_state: str = "starting"
    #: Unix time of ExaBGP's last answer, None before the first.
    exabgp_last_answer: float | None = None
    #: Each BFD session's state (anycastd.announce.bfdd.SESSION_STATES), by neighbor; empty without BFD.
    bfd: dict[str, str] = field(default_factory=dict)
    bfdd_restarts: int = 0


class _StateCollector(Collector):
    def __init__(self, view: Callable[[], View]) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        state = GaugeMetricFamily(
            "anycastd_service_state", "1 for the state the service is in, 0 for the others", labels=["service", "state"]
        )
        announced = GaugeMetricFamily(
            "anycastd_service_announced", "1 while the service prefixes are announced", labels=["service"]
        )
        maintenance = GaugeMetricFamily(
            "anycastd_service_maintenance", "1 while an operator has withdrawn the service", labels=["service"]
        )
        gshut = GaugeMetricFamily(
            "anycastd_service_graceful_shutdown",
            "1 while the failing service's path stays announced, tagged GRACEFUL_SHUTDOWN (65535:0)",
            labels=["service"],
        )
        weight = GaugeMetricFamily(
            "anycastd_weight",
            "the weight the service's path is announced with (link bandwidth, in units of 1 Mbit/s); "
            "absent for a service without a weight",
            labels=["service"],
        )
        penalty, suppressed = damping_families("")
        for s in v.services:
            if s.weight is not None:
                weight.add_metric([s.name], float(s.weight))
            for st in State:
                state.add_metric([s.name, str(st)], 1.0 if st is s.state else 0.0)
            announced.add_metric([s.name], float(s.announced))
            maintenance.add_metric([s.name], float(s.maintenance))
            gshut.add_metric([s.name], float(s.graceful_shutdown))
            penalty.add_metric([s.name], s.penalty)
            suppressed.add_metric([s.name], float(s.suppressed))
        session = GaugeMetricFamily(
            "anycastd_bgp_session_up", "1 while ExaBGP's session with the neighbor is up", labels=["neighbor"]
        )
        for neighbor, phase in sorted(v.sessions.items()):
            session.add_metric([neighbor], 1.0 if phase == "up" else 0.0)
        restarts = CounterMetricFamily("anycastd_exabgp_restarts", "times ExaBGP had to be started again")
        restarts.add_metric([], float(v.exabgp_restarts))
        exabgp = GaugeMetricFamily(
            "anycastd_exabgp_state", "1 for the state ExaBGP is in, 0 for the others", labels=["state"]
        )
        for name in EXABGP_STATES:
            exabgp.add_metric([name], 1.0 if name == v.exabgp_state else 0.0)
        answered = GaugeMetricFamily(
            "anycastd_exabgp_last_answer_timestamp_seconds", "Unix time of ExaBGP's last answer to a heartbeat"
        )
        if v.exabgp_last_answer is not None:
            answered.add_metric([], v.exabgp_last_answer)
        yield from (state, announced, maintenance, gshut, weight, penalty, suppressed)
        yield from (session, restarts, exabgp, answered)
        if v.bfd:
            bfd = GaugeMetricFamily(
                "anycastd_bfd_up", "1 while bfdd's BFD session with the neighbor is up", labels=["neighbor"]
            )
            for neighbor, bfd_state in sorted(v.bfd.items()):
                bfd.add_metric([neighbor], 1.0 if bfd_state == "up" else 0.0)
            bfdd = CounterMetricFamily("anycastd_bfdd_restarts", "times bfdd had to be started again")
            bfdd.add_metric([], float(v.bfdd_restarts))
            yield from (bfd, bfdd)


class _Endpoint:
    """A registry of one's own and the HTTP endpoint that serves it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        build = Info("anycastd_build", "the anycastd that runs: its version and Python's", registry=self.registry)
        build.info({"version": __version__, "python": platform.python_version()})

    def serve(self, address: IPAddress, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, str(address), registry=self.registry)
        except OSError as exc:
            raise AnycastdError(f"cannot serve metrics on {address} port {port}: {exc.strerror or exc}") from None
        log.info("metrics at http://%s/metrics", f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}")

    def _probe_metrics(self, labels: list[str]) -> tuple[Histogram, Counter]:
        """Probe latency and failures, the same names in both daemons; the router adds a server label."""
        seconds = Histogram(
            "anycastd_probe_duration_seconds",
            "time until a passing probe was answered",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        failures = Counter(
            "anycastd_probe_failures",
            "failed probes by kind: timeout, refused, network, malformed, mismatch, rcode, answer, dnssec",
            [*labels, "reason"],
            registry=self.registry,
        )
        return seconds, failures

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Metrics(_Endpoint):
    def __init__(self) -> None:
        super().__init__()
        self.probe_seconds, self.probe_failures = self._probe_metrics(["service", "check"])
        self.transitions = Counter(
            "anycastd_transitions",
            "service state changes, by the state entered",
            ["service", "to"],
            registry=self.registry,
        )

        self.degraded_transitions = Counter(
            "anycastd_degraded_transitions",
            "a service's moves between its weights (degraded_when), by the level entered: normal, degraded, held",
            ["service", "to"],
            registry=self.registry,
        )
        self.bfd_transitions = Counter(
            "anycastd_bfd_transitions",
            "BFD session state changes, by neighbor and the state entered (unknown: bfdd not answering)",
            ["neighbor", "to"],
            registry=self.registry,
        )

    def watch(self, view: Callable[[], View]) -> None:
        self.registry.register(_StateCollector(view))

    def declare_bfd(self, neighbors: Iterable[str], states: Iterable[str]) -> None:
        """Create every BFD transition series at zero."""
        for neighbor in neighbors:
            for state in states:
                self.bfd_transitions.labels(neighbor, state)

    def bfd_transition(self, neighbor: str, to: str) -> None:
        self.bfd_transitions.labels(neighbor, to).inc()

    def declare(self, services: Iterable[tuple[str, int]]) -> None:
        """Create every labelled series at zero for these (service, number of checks)."""
        for service, checks in services:
            for check in range(checks):
                for kind in FAILURE_KINDS:
                    self.probe_failures.labels(service, str(check), kind)
            for state in State:
                self.transitions.labels(service, str(state))

    def probe(self, service: str, check: int, ok: bool, kind: str, latency: float | None) -> None:
        if ok and latency is not None:
            self.probe_seconds.labels(service, str(check)).observe(latency)
        elif not ok:
            self.probe_failures.labels(service, str(check), kind).inc()

    def transition(self, service: str, to: State) -> None:
        self.transitions.labels(service, str(to)).inc()

    def declare_degradation(self, service: str) -> None:
        """Create a degradable service's level series at zero."""
        for level in Level:
            self.degraded_transitions.labels(service, str(level))

    def degraded(self, service: str, to: Level) -> None:
        self.degraded_transitions.labels(service, str(to)).inc()


# the router-side variant ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerView:
    service: str
    server: str
    state: State
    healthy: bool
    routed: bool  # FRR holds the server's routes (as last read back)
    maintenance: bool
    penalty: float = 0.0  # flap damping's penalty now
    suppressed: bool = False  # flap damping holds it back
    weight: int | None = None  # the weight its path is announced with; None: none (every path weighs the same)


@dataclass(frozen=True)
class RouterView:
    servers: list[ServerView] = field(default_factory=list)
    degraded: dict[str, bool] = field(default_factory=dict)  # by service: no healthy server, last set kept
    frr_ok: bool = True
    kernel_agrees: bool = True  # the kernel's FIB holds what zebra claims it installed


class _RouterCollector(Collector):
    def __init__(self, view: Callable[[], RouterView]) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        labels = ["service", "server"]
        state = GaugeMetricFamily(
            "anycastd_server_state", "1 for the state the server is in, 0 for the others", labels=[*labels, "state"]
        )
        healthy = GaugeMetricFamily("anycastd_server_healthy", "1 while the server passes its probes", labels=labels)
        routed = GaugeMetricFamily("anycastd_server_routed", "1 while FRR holds a route via the server", labels=labels)
        maintenance = GaugeMetricFamily(
            "anycastd_server_maintenance", "1 while an operator has drained the server", labels=labels
        )
        penalty, suppressed = damping_families("server")
        for s in v.servers:
            for st in State:
                state.add_metric([s.service, s.server, str(st)], 1.0 if st is s.state else 0.0)
            healthy.add_metric([s.service, s.server], float(s.healthy))
            routed.add_metric([s.service, s.server], float(s.routed))
            maintenance.add_metric([s.service, s.server], float(s.maintenance))
            penalty.add_metric([s.service, s.server], s.penalty)
            suppressed.add_metric([s.service, s.server], float(s.suppressed))
        degraded = GaugeMetricFamily(
            "anycastd_service_degraded",
            "1 while no server of the service passes its probes (the last healthy set is kept, or nothing)",
            labels=["service"],
        )
        for name, flag in sorted(v.degraded.items()):
            degraded.add_metric([name], float(flag))
        frr = GaugeMetricFamily("anycastd_frr_in_sync", "1 while FRR holds the routes anycastd wants")
        frr.add_metric([], float(v.frr_ok))
        kernel = GaugeMetricFamily(
            "anycastd_kernel_fib_agrees", "1 while the kernel's FIB holds what zebra claims it installed"
        )
        kernel.add_metric([], float(v.kernel_agrees))
        yield from (state, healthy, routed, maintenance, penalty, suppressed, degraded, frr, kernel)


class RouterMetrics(_Endpoint):
    def __init__(self) -> None:
        super().__init__()
        self.probe_seconds, self.probe_failures = self._probe_metrics(["service", "server", "check"])
        self.route_changes = Counter(
            "anycastd_route_changes", "static route lines applied to FRR, by kind", ["kind"], registry=self.registry
        )
        self.sync_failures = Counter(
            "anycastd_frr_sync_failures", "FRR could not be read or refused a change", registry=self.registry
        )
        self.fib_divergences = Counter(
            "anycastd_fib_divergences",
            "times a prefix's kernel nexthops differed from what zebra claimed it installed",
            registry=self.registry,
        )
        self._latency: dict[tuple[str, str, int], Histogram] = {}

    def watch(self, view: Callable[[], RouterView]) -> None:
        self.registry.register(_RouterCollector(view))

    def declare(self, servers: Iterable[tuple[str, str, int]]) -> None:
        """Create every labelled series at zero for these (service, server, number of checks)."""
        for service, server, checks in servers:
            for check in range(checks):
                for kind in FAILURE_KINDS:
                    self.probe_failures.labels(service, server, str(check), kind)
        for kind in ("add", "remove"):
            self.route_changes.labels(kind)

    def probe(self, service: str, server: str, check: int, result: ProbeResult) -> None:
        if result.ok and result.latency is not None:
            # Hundreds of probes a second on a router: look each label set up once.
            key = (service, server, check)
            child = self._latency.get(key)
            if child is None:
                child = self._latency[key] = self.probe_seconds.labels(service, server, str(check))
            child.observe(result.latency)
        elif not result.ok:
            self.probe_failures.labels(service, server, str(check), result.kind).inc()
