"""Write packaging/grafana/anycastd.json, the Grafana dashboard of both daemons, from the panel list below.

The JSON is generated, never edited: `make grafana` runs this, and tests/unit/test_grafana.py checks that
the committed file is what this writes, that promtool parses every panel's PromQL, and that every series a
panel names is one that anycastd exports.

Usage: python scripts/grafana_dashboard.py [OUT]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "packaging" / "grafana" / "anycastd.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# the dashboard's filters; every query keeps to them
HOST = 'instance=~"$instance"'
SVC = f'{HOST}, service=~"$service"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat", "table", "state-timeline"
    unit: str = "short"
    width: int = 12
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def q(expr: str, legend: str) -> tuple[Query, ...]:
    return (Query(expr, legend),)


ROWS = (
    Row(
        "Services and servers (the sidecar's view, and the router's)",
        (
            Panel(
                "Sidecar: service state",
                "The state each host's service is in (up, rising, falling, down, maintenance).",
                q(
                    f"max by (instance, service, state) (anycastd_service_state{{{SVC}}}) == 1",
                    "{{instance}} {{service}}",
                ),
                kind="state-timeline",
                options={"mergeValues": True, "showValue": "never"},
            ),
            Panel(
                "Sidecar: path announced",
                "1 while the host announces the service prefixes; GRACEFUL_SHUTDOWN (65535:0) and "
                "an operator's maintenance are shown beside it.",
                (
                    Query(f"anycastd_service_announced{{{SVC}}}", "{{instance}} {{service}} announced"),
                    Query(f"anycastd_service_graceful_shutdown{{{SVC}}}", "{{instance}} {{service}} graceful shutdown"),
                    Query(f"anycastd_service_maintenance{{{SVC}}}", "{{instance}} {{service}} maintenance"),
                ),
            ),
            Panel(
                "Router: server state",
                "The state each server is in, as anycastd router sees it.",
                q(
                    f"max by (service, server, state) (anycastd_server_state{{{SVC}}}) == 1",
                    "{{service}} {{server}}",
                ),
                kind="state-timeline",
                options={"mergeValues": True, "showValue": "never"},
            ),
            Panel(
                "Router: routed via",
                "1 while FRR holds the service's routes via the server; healthy and drained beside it.",
                (
                    Query(f"anycastd_server_routed{{{SVC}}}", "{{service}} {{server}} routed"),
                    Query(f"anycastd_server_healthy{{{SVC}}}", "{{service}} {{server}} healthy"),
                    Query(f"anycastd_server_maintenance{{{SVC}}}", "{{service}} {{server}} drained"),
                ),
            ),
            Panel(
                "Paths per service",
                "How many hosts announce each service (sidecar) and how many servers carry it (router): the "
                "width of the ECMP set.",
                (
                    Query(f"sum by (service) (anycastd_service_announced{{{SVC}}})", "{{service}} announced"),
                    Query(f"sum by (service) (anycastd_server_routed{{{SVC}}})", "{{service}} routed"),
                ),
                width=8,
            ),
            Panel(
                "Degraded services",
                "1 while no server of the service passes its probes and the last set is kept (router).",
                q(f"anycastd_service_degraded{{{SVC}}}", "{{instance}} {{service}}"),
                width=8,
            ),
            Panel(
                "State changes",
                "Service and server state changes in the interval, by the state entered.",
                q(
                    f"sum by (instance, service, to) (increase(anycastd_transitions_total{{{SVC}}}[$__rate_interval]))",
                    "{{instance}} {{service}} to {{to}}",
                ),
                width=8,
            ),
            Panel(
                "Sidecar: weight and share",
                "The weight each host announces its service with (weighted ECMP, the link-bandwidth community), "
                "and its share of the weights of the hosts that announce the service: what the router splits "
                "the flows by. Absent for a service without a weight.",
                (
                    Query(f"anycastd_weight{{{SVC}}}", "{{instance}} {{service}} weight"),
                    Query(
                        f"(anycastd_weight{{{SVC}}} * on (instance, service) anycastd_service_announced{{{SVC}}})"
                        f" / on (service) group_left sum by (service) (anycastd_weight{{{SVC}}}"
                        f" * on (instance, service) anycastd_service_announced{{{SVC}}})",
                        "{{instance}} {{service}} share",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Probes",
        (
            Panel(
                "Probe latency (p50, p99)",
                "How long passing probes took to be answered.",
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le, instance, service) "
                        f"(rate(anycastd_probe_duration_seconds_bucket{{{SVC}}}[$__rate_interval])))",
                        "{{instance}} {{service}} p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le, instance, service) "
                        f"(rate(anycastd_probe_duration_seconds_bucket{{{SVC}}}[$__rate_interval])))",
                        "{{instance}} {{service}} p99",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Probe failures by reason",
                "Failed probes per second: timeout, refused, network, malformed, mismatch, rcode, answer.",
                q(
                    "sum by (instance, service, reason) "
                    f"(rate(anycastd_probe_failures_total{{{SVC}}}[$__rate_interval]))",
                    "{{instance}} {{service}} {{reason}}",
                ),
                unit="reqps",
            ),
            Panel(
                "Flap damping penalty",
                "Each failure adds to it and it halves every half_life; above suppress, a recovered resolver "
                "is held back until it decays below reuse.",
                (
                    Query(f"anycastd_damping_penalty{{{SVC}}}", "{{instance}} {{service}} {{server}}"),
                    Query(
                        f"anycastd_damping_suppressed{{{SVC}}} * 1000",
                        "{{instance}} {{service}} {{server}} suppressed (x1000)",
                    ),
                ),
                width=24,
            ),
        ),
    ),
    Row(
        "Sessions (sidecar): BGP through ExaBGP, BFD through bfdd",
        (
            Panel(
                "BGP sessions up",
                "1 while ExaBGP's session with the neighbor is up.",
                q(f"anycastd_bgp_session_up{{{HOST}}}", "{{instance}} {{neighbor}}"),
                width=8,
            ),
            Panel(
                "BFD sessions up",
                "1 while bfdd's BFD session with the neighbor is up (hosts with BFD only).",
                q(f"anycastd_bfd_up{{{HOST}}}", "{{instance}} {{neighbor}}"),
                width=8,
            ),
            Panel(
                "BFD state changes",
                "BFD session changes in the interval, by the state entered (unknown: bfdd not answering).",
                q(
                    "sum by (instance, neighbor, to) "
                    f"(increase(anycastd_bfd_transitions_total{{{HOST}}}[$__rate_interval]))",
                    "{{instance}} {{neighbor}} to {{to}}",
                ),
                width=8,
            ),
            Panel(
                "ExaBGP state",
                "The state of the ExaBGP anycastd supervises.",
                q(f"max by (instance, state) (anycastd_exabgp_state{{{HOST}}}) == 1", "{{instance}}"),
                kind="state-timeline",
                options={"mergeValues": True, "showValue": "never"},
            ),
            Panel(
                "Child restarts",
                "Times ExaBGP and bfdd had to be started again, in the interval.",
                (
                    Query(
                        f"increase(anycastd_exabgp_restarts_total{{{HOST}}}[$__rate_interval])", "{{instance}} ExaBGP"
                    ),
                    Query(f"increase(anycastd_bfdd_restarts_total{{{HOST}}}[$__rate_interval])", "{{instance}} bfdd"),
                ),
            ),
            Panel(
                "Seconds since ExaBGP last answered",
                "anycastd's heartbeat to ExaBGP; over 1.5 s its helper's watchdog withdraws every route.",
                q(f"time() - anycastd_exabgp_last_answer_timestamp_seconds{{{HOST}}}", "{{instance}}"),
                unit="s",
                width=24,
            ),
        ),
    ),
    Row(
        "Router side: FRR and the kernel",
        (
            Panel(
                "Route changes",
                "Static route lines anycastd router applied to FRR in the interval, by kind.",
                q(
                    f"sum by (instance, kind) (increase(anycastd_route_changes_total{{{HOST}}}[$__rate_interval]))",
                    "{{instance}} {{kind}}",
                ),
                width=8,
            ),
            Panel(
                "FRR in step",
                "1 while FRR holds what anycastd wants and the kernel's FIB holds what zebra installed.",
                (
                    Query(f"anycastd_frr_in_sync{{{HOST}}}", "{{instance}} FRR in sync"),
                    Query(f"anycastd_kernel_fib_agrees{{{HOST}}}", "{{instance}} kernel agrees"),
                ),
                width=8,
            ),
            Panel(
                "FRR failures and FIB divergences",
                "FRR could not be read or refused a change; the kernel's nexthops differed from zebra's.",
                (
                    Query(
                        f"increase(anycastd_frr_sync_failures_total{{{HOST}}}[$__rate_interval])",
                        "{{instance}} sync failures",
                    ),
                    Query(
                        f"increase(anycastd_fib_divergences_total{{{HOST}}}[$__rate_interval])",
                        "{{instance}} divergences",
                    ),
                ),
                width=8,
            ),
        ),
    ),
    Row(
        "The daemons",
        (
            Panel(
                "Versions",
                "The anycastd each host runs, and its Python.",
                q(f"anycastd_build_info{{{HOST}}}", "{{instance}} {{version}}"),
                kind="table",
                options={"showHeader": True},
            ),
            Panel(
                "CPU and memory",
                "The daemon's own process (its children are not counted).",
                (
                    Query(
                        f'rate(process_cpu_seconds_total{{{HOST}, job=~"$job"}}[$__rate_interval])', "{{instance}} CPU"
                    ),
                    Query(f'process_resident_memory_bytes{{{HOST}, job=~"$job"}} / 1e9', "{{instance}} RSS (GB)"),
                ),
            ),
        ),
    ),
)


def variable(name: str, label: str, query: str, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        next_id += 1
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(
                {
                    "id": next_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": panel.options,
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "datasource": DATASOURCE,
                            "expr": query.expr,
                            "legendFormat": query.legend,
                        }
                        for i, query in enumerate(panel.queries)
                    ],
                }
            )
            next_id += 1
            x += panel.width
        y += 8
    return {
        "title": "anycastd",
        "uid": "anycastd",
        "description": "anycastd's sidecars and routers: services, probes, sessions, FRR (docs/operations.md)",
        "tags": ["anycastd", "dns", "bgp"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("job", "Job", "label_values(anycastd_build_info, job)"),
                variable("instance", "Host", 'label_values(anycastd_build_info{job=~"$job"}, instance)'),
                variable(
                    "service", "Service", 'label_values(anycastd_transitions_total{instance=~"$instance"}, service)'
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
