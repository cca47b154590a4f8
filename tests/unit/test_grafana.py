"""packaging/grafana/anycastd.json: current, well formed, every query parsed by promtool and naming only series
anycastd exports; and the Prometheus scrape-config example beside the alert rules."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from anycastd.core.health import State
from anycastd.daemons.metrics import Metrics, RouterMetrics, RouterView, ServerView, ServiceView, View
from tests.unit.test_alerts import promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "anycastd.json"
SCRAPE = ROOT / "packaging" / "prometheus" / "scrape-config.yml"
#: What Grafana puts in place of the dashboard's variables before a query reaches Prometheus.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$service": ".*", "$job": ".*"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_dashboard", ROOT / "scripts" / "grafana_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def exported() -> set[str]:
    """Every sample name either daemon exports, with every optional part on (BFD, a weight, a degraded service)."""
    sidecar = Metrics()
    sidecar.watch(
        lambda: View(
            [ServiceView("dns", State.UP, True, False, weight=3)],
            {"192.0.2.9": "up"},
            2,
            "up",
            1.8e9,
            {"192.0.2.9": "up"},
            1,
        )
    )
    sidecar.declare([("dns", 1)])
    sidecar.declare_bfd(["192.0.2.9"], ["up", "down"])
    sidecar.probe("dns", 0, True, "ok", 0.001)  # a histogram's buckets appear with its first observation
    router = RouterMetrics()
    router.watch(lambda: RouterView([ServerView("dns", "ns1", State.UP, True, True, False)], {"dns": False}))
    router.declare([("dns", "ns1", 1)])
    names = set()
    for registry in (sidecar.registry, router.registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            names |= {sample.name for sample in family.samples}
    return names


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text() == generator().render(), "run `make grafana` (scripts/grafana_dashboard.py)"


def test_every_panel_has_a_place_a_source_and_queries() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
    used = {v["name"] for v in dashboard()["templating"]["list"]}
    for expr in queries():
        assert set(re.findall(r"\$(\w+)", expr)) <= used | {"__rate_interval"}, expr


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    rules = []
    for n, query in enumerate(queries()):
        expr = query
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        rules.append({"record": f"anycastd:dashboard_query_{n}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_every_series_a_panel_names_is_one_anycastd_exports() -> None:
    named = {name for expr in queries() for name in re.findall(r"\b((?:anycastd|process)_[a-z_]+)\b", expr)}
    assert named - exported() == set()
    # and the dashboard covers what the issue asked for: states, paths, latency, failures, damping, sessions, FRR
    for family in (
        "anycastd_service_state",
        "anycastd_server_state",
        "anycastd_server_routed",
        "anycastd_probe_duration_seconds_bucket",
        "anycastd_probe_failures_total",
        "anycastd_route_changes_total",
        "anycastd_damping_penalty",
        "anycastd_bgp_session_up",
        "anycastd_bfd_up",
        "anycastd_frr_in_sync",
    ):
        assert family in named, family


def test_promtool_accepts_the_scrape_config_and_it_loads_the_alert_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "config", SCRAPE.name], cwd=SCRAPE.parent, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(SCRAPE.read_text())
    assert config["rule_files"] == ["anycastd-alerts.yml"]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["anycastd"]
