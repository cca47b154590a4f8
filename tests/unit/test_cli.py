"""The commands as real subprocesses: output and exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anycastd.cli.anycastctl import status_code
from tests.helpers import GOOD


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "anycastd.yaml"
    path.write_text(GOOD)
    result = cli("anycastd", "check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: OK (1 service(s), 2 neighbor(s))\n"


def test_check_config_lists_every_problem_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "anycastd.yaml"
    path.write_text(GOOD.replace("timeout: 0.25", "timeout: -1").replace("local_asn: 65001", "local_asn: x"))
    result = cli("anycastd", "check-config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:2:1: local_asn: must be a whole number, got 'x'",
        f"{path}:20:9: services.dns.checks[0].timeout: must be > 0, got -1",
        f"{path}: 2 problem(s); nothing was changed",
    ]


def test_run_refuses_a_bad_config_before_touching_anything(tmp_path: Path) -> None:
    path = tmp_path / "anycastd.yaml"
    runtime = tmp_path / "run"
    path.write_text(GOOD.replace("timeout: 0.25", "timeout: 9") + f"runtime_dir: {runtime}\n")
    result = cli("anycastd", "run", "--config", str(path))
    assert result.returncode == 1
    assert "services.dns.checks[0].timeout: must be smaller than the interval" in result.stderr
    assert not runtime.exists()


def test_missing_config_file() -> None:
    result = cli("anycastd", "check-config", "/nonexistent/anycastd.yaml")
    assert result.returncode == 1
    assert "/nonexistent/anycastd.yaml: cannot read the configuration: No such file or directory" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert cli("anycastd").returncode == 2
    assert cli("anycastd", "frobnicate").returncode == 2


def test_version() -> None:
    result = cli("anycastd", "--version")
    assert result.returncode == 0 and result.stdout.startswith("anycastd ")


def test_anycastctl_without_a_daemon_says_where_it_looked(tmp_path: Path) -> None:
    result = cli("anycastd.cli.anycastctl", "--socket", str(tmp_path / "none.sock"), "status")
    assert result.returncode == 7  # no daemon
    assert (
        result.stderr
        == f"anycastctl: no control socket at {tmp_path}/none.sock: is anycastd running? (or pass --socket)\n"
    )
    stale = tmp_path / "stale.sock"  # left behind by a daemon that died
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))
    after = cli("anycastd.cli.anycastctl", "status", "--json", "--socket", str(stale))  # global options after it
    assert after.returncode == 7
    assert after.stderr == f"anycastctl: nothing listens on {stale}: anycastd is not running\n"
    assert json.loads(after.stdout) == {"ok": False, "error": f"nothing listens on {stale}: anycastd is not running"}
    assert result.stdout == ""  # without --json, stdout stays empty: the message is on stderr
    assert cli("anycastd.cli.anycastctl").returncode == 2
    assert cli("anycastd.cli.anycastctl", "withdraw", "dns").returncode == 2  # --reason is required
    assert cli("anycastd.cli.anycastctl", "withdraw", "dns", "--all", "--reason", "x").returncode == 2


def test_check_config_router(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "anycastd-router.yaml"
    result = cli("anycastd", "check-config", "--router", str(example))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{example}: OK (1 service(s), 3 server(s); router)\n"
    wrong = cli("anycastd", "check-config", str(example))
    assert wrong.returncode == 1
    assert "check it with `anycastd check-config --router FILE`" in wrong.stderr
    bad = tmp_path / "router.yaml"
    bad.write_text(example.read_text().replace("when_all_down: keep", "when_all_down: drop"))
    refused = cli("anycastd", "router", "--config", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:10:3: router.when_all_down: must be one of keep, withdraw, got 'drop'" in refused.stderr


def _sidecar_doc(**change: object) -> dict[str, object]:
    service = {
        "name": "dns",
        "announced": True,
        "path": "announced",
        "prefixes": [{"prefix": "203.0.113.53/32", "announced": True}],
    }
    doc: dict[str, object] = {"problem": None, "bgp": {"192.0.2.9": "up"}, "services": [service]}
    for key, value in change.items():
        if key in service:
            service[key] = value
        else:
            doc[key] = value
    return doc


def _router_doc(**change: object) -> dict[str, object]:
    service: dict[str, Any] = {
        "name": "dns",
        "decided": True,
        "degraded": None,
        "routed_via": ["ns1", "ns2"],
        "servers": [{"name": "ns1", "routed": True}, {"name": "ns2", "routed": True}],
    }
    frr: dict[str, Any] = {"in_sync": True, "kernel_agrees": True}
    doc: dict[str, Any] = {"mode": "router", "problem": None, "frr": frr, "services": [service]}
    for key, value in change.items():
        for part in (service, frr, doc):
            if key in part:
                part[key] = value
                break
    return doc


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (_sidecar_doc(), 0),
        (_sidecar_doc(announced=False, path="withdrawn"), 5),  # down, drained, or held by damping
        (_sidecar_doc(path="graceful-shutdown"), 6),  # failing, kept announced
        (_sidecar_doc(bgp={"192.0.2.9": "down"}), 6),  # "announced", but the router has nothing
        (_sidecar_doc(bgp={}), 6),
        (_sidecar_doc(prefixes=[{"prefix": "203.0.113.53/32", "announced": False}]), 6),  # ExaBGP has not confirmed
        (_sidecar_doc(problem="maintenance.json: not JSON"), 6),
        (_sidecar_doc(announced=False, bgp={"192.0.2.9": "down"}), 6),  # the worse of the two
        (_router_doc(), 0),
        (_router_doc(servers=[{"name": "ns1", "routed": True}, {"name": "ns2", "routed": False}]), 5),
        (_router_doc(decided=False), 5),  # waiting for every server's first verdict
        (_router_doc(degraded="no server passes its probes; the last healthy set is kept"), 6),
        (_router_doc(routed_via=[]), 6),
        (_router_doc(in_sync=False), 6),
        (_router_doc(kernel_agrees=False), 6),
    ],
)
def test_status_exit_codes_say_announced_withdrawn_or_degraded(doc: dict[str, object], code: int) -> None:
    assert status_code(doc) == code
