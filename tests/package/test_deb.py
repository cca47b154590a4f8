"""The Debian package on this machine: install, check, upgrade with an edited conffile, purge (`make package-test`).

It changes the machine (a package, a user, /etc/anycastd), so `make test` skips it; `make package-test` builds
the package (`make deb`) and runs it as root with ANYCASTD_PACKAGE_TEST=1. Whatever fails, the package is
purged at the end. Where systemd is not PID 1 (containers, this project's CI), units cannot be started: the
test says so, checks the units offline (`systemd-analyze verify` and `security`) and checks that the
maintainer scripts restart a running daemon on upgrade, and runs every other step.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anycastd import DOC_DIR, __version__

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
PACKAGE = "anycastd-dns"
NEXT = f"{__version__}+upgrade1"  # the "next release": the same tree, rebuilt under a higher version
UNITS = ("anycastd.service", "anycastd-router.service")
CONFFILES = ("/etc/anycastd/anycastd.yaml", "/etc/anycastd/router.yaml")
MAX_EXPOSURE = 2.0
SYSTEMD = Path("/run/systemd/system").is_dir()  # systemd is PID 1

pytestmark = pytest.mark.skipif(
    os.environ.get("ANYCASTD_PACKAGE_TEST") != "1" or os.geteuid() != 0,
    reason="installs a package on this machine: `make package-test` runs it, as root",
)


def run(*argv: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", **extra_env}
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, check=False)
    if check:
        assert result.returncode == 0, f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def installed_version() -> str | None:
    result = run("dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE, check=False)
    words = result.stdout.split()
    return words[-1] if result.returncode == 0 and "installed" in words[:3] and len(words) == 4 else None


def deb(version: str) -> Path:
    found = sorted(DIST.glob(f"{PACKAGE}_{version}_*.deb"))
    assert found, f"no {PACKAGE} {version} in {DIST}: `make deb` builds it"
    return found[-1]


def purge() -> None:
    run("apt-get", "purge", "-y", "-q", PACKAGE, check=False)


@pytest.fixture
def clean_machine() -> Iterator[None]:
    purge()  # a run that died before its own purge
    try:
        yield
    finally:
        purge()


def check_installed(version: str) -> None:
    assert installed_version() == version
    # one version everywhere: the package, both commands (the metric and the status document read the same)
    assert run("/usr/bin/anycastd", "--version").stdout.strip() == f"anycastd {version}"
    assert run("/usr/bin/anycastctl", "--version").stdout.strip() == f"anycastctl {version}"


def check_files() -> None:
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    for path in CONFFILES:
        assert path in conffiles, f"{path} is not a conffile:\n{conffiles}"
    for unit in UNITS:
        text = Path("/lib/systemd/system", unit).read_text()
        assert "/usr/local/" not in text
        documentation = re.search(r"^Documentation=file://(\S+)$", text, re.MULTILINE)
        assert documentation is not None and Path(documentation[1]).is_file(), f"{unit}: {documentation}"
    for path in (
        "/usr/share/man/man1/anycastd.1.gz",
        "/usr/share/man/man1/anycastctl.1.gz",
        "/usr/share/bash-completion/completions/anycastctl",
        "/usr/share/zsh/site-functions/_anycastctl",
        f"{DOC_DIR}/operations.md",
        f"{DOC_DIR}/examples/anycastd.yaml",
        f"{DOC_DIR}/examples/anycastd-router.yaml",
        f"{DOC_DIR}/examples/bfd.conf",
        "/usr/share/anycastd-dns/prometheus/anycastd-alerts.yml",
        "/usr/share/anycastd-dns/prometheus/scrape-config.yml",
        "/usr/share/anycastd-dns/grafana/anycastd.json",
        "/usr/share/anycastd-dns/frr/bgp/frr.conf",
        "/usr/lib/sysusers.d/anycastd-dns.conf",
        "/usr/lib/tmpfiles.d/anycastd-dns.conf",
    ):
        assert Path(path).is_file(), f"{path} is not installed"
    user = pwd.getpwnam("anycastd")
    assert user.pw_shell == "/usr/sbin/nologin"
    state = Path("/var/lib/anycastd").stat()
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (user.pw_uid, 0o750)


def check_the_examples_refuse_to_run(tmp_path: Path) -> None:
    """Nothing runs from /etc/anycastd as installed; the same examples, once described (here: the marker
    deleted), are valid."""
    for conffile, example, flags in (
        (CONFFILES[0], "anycastd.yaml", ()),
        (CONFFILES[1], "anycastd-router.yaml", ("--router",)),
    ):
        refused = run("/usr/bin/anycastd", "check-config", *flags, conffile, check=False)
        assert refused.returncode == 1
        assert "example: this is the example the package installed" in refused.stderr, refused.stderr
        described = tmp_path / example
        described.write_text(Path(DOC_DIR, "examples", example).read_text())
        run("/usr/bin/anycastd", "check-config", *flags, str(described))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    hint = run("/usr/bin/anycastd", "check-config", str(empty), check=False).stderr
    assert f"start from an example in {DOC_DIR}/examples/" in hint


def check_units() -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    for unit in UNITS:
        path = f"/lib/systemd/system/{unit}"
        verified = run(analyze, "verify", path, check=False)
        problems = [line for line in (verified.stdout + verified.stderr).splitlines() if unit in line]
        assert problems == [], "\n".join(problems)
        score = run(analyze, "security", "--offline=true", path).stdout
        exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", score)[1])  # type: ignore[index]
        assert exposure <= MAX_EXPOSURE, f"{unit}: exposure {exposure}"


def check_upgrade_restarts() -> None:
    """An upgrade restarts a running daemon (SIGTERM drains it; the new one announces after rise) and
    starts none that the operator has not started."""
    postinst = Path(f"/var/lib/dpkg/info/{PACKAGE}.postinst").read_text()
    restarted = re.search(r"deb-systemd-invoke try-restart (.+) >/dev/null", postinst)
    assert restarted is not None, postinst
    assert set(restarted[1].replace("'", "").split()) == set(UNITS)
    for unit in UNITS:  # enabled by the operator once /etc/anycastd describes the host, not by the package
        assert run("systemctl", "is-enabled", unit, check=False).stdout.strip() == "disabled"
    prerm = Path(f"/var/lib/dpkg/info/{PACKAGE}.prerm")
    assert not prerm.exists() or "deb-systemd-invoke stop" not in prerm.read_text()  # not stopped while unpacking


def check_the_installed_daemon_does_its_job() -> None:
    """The package's own `anycastd run`, as the unit runs it (the anycastd user, CAP_NET_ADMIN alone, no new
    privileges: setpriv), in the lab beside real FRR, ExaBGP and Unbound: announces, withdraws a dead
    resolver, keeps a drain (tests/integration/test_privilege_lab.py, with the lab's daemons from /usr/bin)."""
    test = "tests/integration/test_privilege_lab.py::test_the_sidecar_runs_without_root"
    result = run(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test, check=False, ANYCASTD_LAB_BIN="/usr/bin"
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_install_check_upgrade_and_purge(clean_machine: None, tmp_path: Path) -> None:
    if not SYSTEMD:
        print("systemd is not PID 1 here: the units are checked offline and not started", file=sys.stderr)
    first = deb(__version__)
    run("apt-get", "install", "-y", "-q", str(first))
    check_installed(__version__)
    check_files()
    check_the_examples_refuse_to_run(tmp_path)
    check_units()
    check_upgrade_restarts()
    check_the_installed_daemon_does_its_job()

    # the operator describes the host: the conffile is theirs from now on
    edited = Path(DOC_DIR, "examples", "anycastd.yaml").read_text() + "# described by the package test\n"
    Path(CONFFILES[0]).write_text(edited)
    run("/usr/bin/anycastd", "check-config", CONFFILES[0])
    drain = Path("/var/lib/anycastd/maintenance.json")
    drain.write_text("{}")  # stands for the daemon's state: an upgrade keeps it, a purge removes it

    run("make", "-C", str(ROOT), "deb", f"DEB_VERSION={NEXT}")
    run("apt-get", "install", "-y", "-q", str(deb(NEXT)))  # stdin is /dev/null: a conffile prompt fails it
    check_installed(NEXT)
    assert Path(CONFFILES[0]).read_text() == edited  # kept, without a question
    assert drain.exists()

    purge()
    assert installed_version() is None
    assert run("dpkg-query", "-W", PACKAGE, check=False).returncode != 0 or "config-files" not in (
        run("dpkg-query", "-W", "-f=${Status}", PACKAGE, check=False).stdout
    )
    for gone in ("/usr/lib/anycastd-dns", "/usr/bin/anycastd", "/etc/anycastd", "/var/lib/anycastd", DOC_DIR):
        assert not Path(gone).exists(), f"{gone} is left after purge"
    pwd.getpwnam("anycastd")  # the user stays (Debian policy 9.2.2: its files may remain elsewhere)
