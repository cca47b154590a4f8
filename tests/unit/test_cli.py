"""The commands as real subprocesses: output and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.test_config import GOOD


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
    assert result.returncode == 1
    assert (
        result.stderr
        == f"anycastctl: no control socket at {tmp_path}/none.sock: is anycastd running? (or pass --socket)\n"
    )
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
