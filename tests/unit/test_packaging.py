"""packaging/systemd: the units run commands the CLI accepts, in the directories the defaults use."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from anycastd import __version__
from anycastd.cli.anycastd import _parser
from anycastd.config import sidecar as config
from anycastd.config.schema import DEFAULT_RUNTIME_DIR

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging" / "systemd"
INSTALLED = "/usr/local/bin/anycastd"
ANYCASTD = str(Path(sys.executable).with_name("anycastd"))

# unit, the config file it names, the example to stand in for it, the state directory default
CASES = [
    ("anycastd.service", "/etc/anycastd/anycastd.yaml", "examples/anycastd.yaml", config.DEFAULT_STATE_DIR),
    (
        "anycastd-router.service",
        "/etc/anycastd/router.yaml",
        "examples/anycastd-router.yaml",
        Path("/var/lib/anycastd-router"),
    ),
]


def service(unit: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / unit).read_text())
    return parser["Service"]


@pytest.mark.parametrize(("unit", "path", "example", "state"), CASES, ids=[c[0] for c in CASES])
def test_the_unit_checks_then_runs_one_configuration(unit: str, path: str, example: str, state: Path) -> None:
    s = service(unit)
    pre, start = shlex.split(s["ExecStartPre"]), shlex.split(s["ExecStart"])
    assert pre[0] == start[0] == INSTALLED
    assert pre[-1] == start[-1] == path
    args = _parser().parse_args(start[1:])
    assert args.config == path
    checked = subprocess.run([ANYCASTD, *pre[1:-1], str(ROOT / example)], check=False, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert Path("/run") / s["RuntimeDirectory"] == DEFAULT_RUNTIME_DIR
    assert Path("/var/lib") / s["StateDirectory"] == state


def analyze(unit: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze ARGS` on a copy of ``unit`` that runs this checkout's anycastd (skip without it)."""
    program = shutil.which("systemd-analyze")
    if program is None:
        pytest.skip("systemd-analyze is not installed (make deps installs it)")
    copy = tmp_path / unit
    copy.write_text((UNITS / unit).read_text().replace(INSTALLED, ANYCASTD))
    dropins = UNITS / f"{unit}.d"
    if dropins.is_dir():  # scored with its drop-ins (BFD's widens the sidecar's): the worst case an operator runs
        shutil.copytree(dropins, tmp_path / dropins.name)
    return subprocess.run([program, *args, str(copy)], check=False, capture_output=True, text=True)


@pytest.mark.parametrize("unit", [c[0] for c in CASES])
def test_systemd_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    result = analyze(unit, tmp_path, "verify")
    problems = [line for line in (result.stdout + result.stderr).splitlines() if unit in line]
    assert problems == []


@pytest.mark.parametrize("unit", [c[0] for c in CASES])
def test_each_unit_is_notify_with_a_watchdog_and_restarts_on_failure(unit: str) -> None:
    s = service(unit)
    assert (s["Type"], s["NotifyAccess"], s["Restart"]) == ("notify", "main", "on-failure")
    assert s["WatchdogSec"] == "5s"  # pings stop once a probe loop misses its stall bound; 5 s later, a restart


#: The exposure `systemd-analyze security` may give either unit (0 is best, 10 worst).
MAX_EXPOSURE = 2.0


@pytest.mark.parametrize(
    ("unit", "capabilities"),
    [("anycastd.service", "CAP_NET_ADMIN"), ("anycastd-router.service", "")],
)
def test_each_unit_runs_unprivileged_with_only_the_capabilities_it_needs(unit: str, capabilities: str) -> None:
    s = service(unit)
    assert (s["User"], s["Group"]) == ("anycastd", "anycastd")
    assert s["CapabilityBoundingSet"] == capabilities
    assert s.get("AmbientCapabilities", "") == capabilities
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateDevices", "RestrictNamespaces", "ProtectKernelTunables"):
        assert s[key] in ("yes", "strict"), key
    if unit == "anycastd-router.service":
        assert s["SupplementaryGroups"] == "frrvty"  # vtysh, and nothing else


@pytest.mark.parametrize("unit", [c[0] for c in CASES])
def test_systemd_scores_the_units_exposure_at_most_2(unit: str, tmp_path: Path) -> None:
    result = analyze(unit, tmp_path, "security", "--offline=true")
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, result.stdout + result.stderr
    score = float(overall[0].split(":")[1].split()[0])
    assert score <= MAX_EXPOSURE, "\n".join(line for line in result.stdout.splitlines() if "✗" in line)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist, and a wheel built from it, as `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=False, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_wheel_holds_the_runtime_only(dist: Path) -> None:
    """What operators install on a DNS server: the daemon and its CLI, not the lab, the demo or the benchmarks."""
    [wheel] = dist.glob("anycastd_dns-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith((".dist-info", ".data"))} == {"anycastd"}
    assert not [n for n in names if "/lab/" in n or "anycastd_lab" in n or n.startswith(("tests/", "bench/"))]
    for needed in ("anycastd/cli/anycastd.py", "anycastd/announce/exabgp_helper.py", "anycastd/daemons/offloop.py"):
        assert needed in names
    assert f"anycastd_dns-{__version__}.dist-info/licenses/LICENSE" in names
    data = f"anycastd_dns-{__version__}.data/data/share"
    for shared in ("man/man1/anycastctl.1", "bash-completion/completions/anycastctl", "zsh/site-functions/_anycastd"):
        assert f"{data}/{shared}" in names


def test_the_man_pages_and_completions_are_those_the_parsers_give_now(tmp_path: Path) -> None:
    """`make cli-files` was run after the last change to a parser: the committed files are current."""
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_files.py"), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(fresh) == 6
    stale = [str(p) for p in fresh if (tmp_path / p).read_text() != (ROOT / "packaging" / p).read_text()]
    assert stale == [], "run `make cli-files` and commit packaging/"


def test_the_built_package_installs_into_a_clean_venv_and_runs(dist: Path, tmp_path: Path) -> None:
    """docs/operations.md's instructions: a fresh venv, the wheel, and both commands answer with the one version."""
    [wheel] = dist.glob(f"anycastd_dns-{__version__}-*.whl")
    assert list(dist.glob(f"anycastd_dns-{__version__}.tar.gz"))
    venv = tmp_path / "venv"
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr
    for command in ("anycastd", "anycastctl"):
        out = subprocess.run([str(venv / "bin" / command), "--version"], check=True, capture_output=True, text=True)
        assert out.stdout.split() == [command, __version__]
        assert (venv / "share" / "man" / "man1" / f"{command}.1").is_file()
        assert (venv / "share" / "bash-completion" / "completions" / command).is_file()
    shown = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.metadata('anycastd-dns')['License-Expression'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert shown.stdout.strip() == "Apache-2.0"


def test_it_installs_from_a_git_url(tmp_path: Path) -> None:
    """The README's other way: pip from git (this checkout's repository, by a file:// URL)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    venv = tmp_path / "venv"
    subprocess.run([shutil.which("python3", path="/usr/bin") or sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            f"git+file://{ROOT}",  # Debian 12 pip (23.0) refuses "NAME @ git+file://" (no host); this form is the docs'
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr
    out = subprocess.run([str(venv / "bin" / "anycastctl"), "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["anycastctl", __version__]


def test_the_version_is_written_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
