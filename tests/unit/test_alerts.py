"""The metrics both daemons export, and the example alert rules written against them.

promtool (Debian's prometheus package; `make deps` installs it) checks the exposition's naming and
the rules, and runs the rules' own unit tests. Without it, the client library's parser still reads
the exposition back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from anycastd import __version__
from anycastd.core.health import State
from anycastd.daemons.metrics import Metrics, RouterMetrics, RouterView, ServerView, ServiceView, View

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "prometheus" / "anycastd-alerts.yml"
RULE_TESTS = ROOT / "packaging" / "prometheus" / "anycastd-alerts.test.yml"


def sidecar_page() -> str:
    m = Metrics()
    m.watch(lambda: View([ServiceView("dns", State.UP, True, False)], {"192.0.2.9": "up"}, 2, "up", 1.8e9))
    m.declare([("dns", 1)])
    return generate_latest(m.registry).decode()


def router_page() -> str:
    m = RouterMetrics()
    m.watch(lambda: RouterView([ServerView("dns", "ns1", State.UP, True, True, False)], {"dns": False}))
    m.declare([("dns", "ns1", 1)])
    return generate_latest(m.registry).decode()


def families(page: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(page)}


def test_the_names_follow_prometheus_conventions_and_the_standard_collectors_are_there() -> None:
    sidecar = families(sidecar_page())
    assert sidecar["anycastd_exabgp_restarts"] == "counter"  # exposed as anycastd_exabgp_restarts_total
    assert sidecar["anycastd_probe_failures"] == sidecar["anycastd_transitions"] == "counter"
    for standard in (
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_objects_collected",
    ):
        assert standard in sidecar, standard
    assert {"anycastd_route_changes", "anycastd_frr_sync_failures", "process_cpu_seconds"} <= families(
        router_page()
    ).keys()


def test_build_info_says_the_version() -> None:
    page = sidecar_page()
    assert re.search(rf'^anycastd_build_info{{python="[0-9.]+",version="{re.escape(__version__)}"}} 1\.0$', page, re.M)


def test_every_labelled_counter_exists_at_zero_from_the_start() -> None:
    page = sidecar_page()
    for reason in ("timeout", "refused", "network", "malformed", "mismatch", "rcode", "answer"):
        assert f'anycastd_probe_failures_total{{check="0",reason="{reason}",service="dns"}} 0.0' in page
    for state in State:
        assert f'anycastd_transitions_total{{service="dns",to="{state}"}} 0.0' in page
    assert "anycastd_exabgp_restarts_total 2.0" in page
    router = router_page()
    assert 'anycastd_probe_failures_total{check="0",reason="timeout",server="ns1",service="dns"} 0.0' in router
    assert 'anycastd_route_changes_total{kind="add"} 0.0' in router


def test_every_series_the_rules_use_is_one_anycastd_exports() -> None:
    exported = set()
    for page in (sidecar_page(), router_page()):
        for family in text_string_to_metric_families(page):
            exported |= {sample.name for sample in family.samples}
    rules = yaml.safe_load(RULES.read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(anycastd_[a-z_]+)\b", rule["expr"])
    }
    assert used and used <= exported, used - exported


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (make deps installs Debian's prometheus package)")
    return found


@pytest.mark.parametrize("page", [sidecar_page, router_page], ids=["sidecar", "router"])
def test_promtool_finds_nothing_to_lint_in_the_metrics(page: object) -> None:
    assert callable(page)
    result = subprocess.run([promtool(), "check", "metrics"], input=page(), capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_promtool_accepts_the_rules_and_their_tests_pass() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
