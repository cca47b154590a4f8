"""The sidecar end to end as the unprivileged user anycastd, with CAP_NET_ADMIN alone (setpriv, as the unit does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import wait_until

CAP_NET_ADMIN = 1 << 12


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _runnable_by(user: str) -> bool:
    """Can ``user`` run this Python and import anycastd, and start ExaBGP the way anycastd does (a child of
    this Python)? Not with a checkout or an interpreter in a private directory such as /root."""
    child = "import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', 'import anycastd']).returncode)"
    argv = [*daemons.as_user(user, ()), sys.executable, "-c", child]
    return subprocess.run(argv, check=False, capture_output=True, cwd="/").returncode == 0


@pytest.fixture
def user() -> str:
    """The unprivileged user the unit runs anycastd as, made if missing; the test is skipped where it cannot run."""
    name = daemons.UNPRIVILEGED_USER
    daemons.ensure_user(name)
    if not _runnable_by(name):
        pytest.skip(f"user {name} cannot run {sys.executable} and import anycastd (make venv builds it from Debian's)")
    return name


def test_the_sidecar_runs_without_root(lab: BgpLab, user: str) -> None:
    s1 = lab.servers[0]
    try:
        lab.kill_anycastd(s1)
        lab.wait_server(s1, present=False)
        lab.start_anycastd(s1, daemons.anycastd_config(lab.lab, s1, bfd=None), user=user)
        lab.wait_server(s1, present=True, timeout=20)

        # anycastd and ExaBGP: not root, CAP_NET_ADMIN and nothing else, no way to gain more
        pid = lab.lab.processes[daemons.anycastd_key(s1)].pid
        if daemons.INSTALLED_BIN:  # tests/package: the package's command, run by the package's interpreter
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[:2] == [b"/usr/lib/anycastd-dns/bin/python", f"{daemons.INSTALLED_BIN}/anycastd".encode()]
        exabgp = lab.exabgp_pid(s1)
        assert exabgp is not None
        for process in (pid, exabgp):
            status = _status(process)
            assert {int(uid) for uid in status["Uid"].split()} != {0}, status["Uid"]
            assert 0 not in {int(uid) for uid in status["Uid"].split()}
            assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == CAP_NET_ADMIN
            assert status["NoNewPrivs"] == "1"

        # it still does its whole job: a dead resolver is withdrawn, a live one announced, a drain persisted
        lab.kill_resolver(s1)
        lab.wait_server(s1, present=False)
        lab.start_resolver(s1)
        lab.wait_server(s1, present=True, timeout=20)
        drained = lab.anycastctl(s1, "withdraw", "--all", "--reason", "unprivileged drain")
        assert drained.returncode == 0, drained.stderr
        lab.wait_server(s1, present=False)
        state = lab.lab.workdir / s1.name / "state" / "maintenance.json"
        assert "unprivileged drain" in state.read_text()
        assert state.stat().st_uid != 0
        announced = lab.anycastctl(s1, "announce", "--all")
        assert announced.returncode == 0, announced.stderr
        lab.wait_server(s1, present=True, timeout=20)
    finally:
        lab.kill_anycastd(s1)
        lab.start_anycastd(s1)  # as root again, for the other tests of this module


BFD_CAPS = CAP_NET_ADMIN | 1 << 10 | 1 << 13 | 1 << 21  # + NET_BIND_SERVICE, NET_RAW, SYS_ADMIN (the drop-in's)


def test_bfd_runs_without_root_with_the_drop_ins_capabilities(lab: BgpLab, user: str) -> None:
    """bfdd runs as anycastd's own user (no change of credentials, so it dies with anycastd), with the three
    capabilities packaging/systemd/anycastd.service.d/bfd.conf adds; without them anycastd says so at start."""
    s1 = lab.servers[0]
    try:
        lab.kill_anycastd(s1)
        lab.wait_server(s1, present=False)
        lab.start_anycastd(s1, user=user)
        lab.wait_server(s1, present=True, timeout=20)
        lab.wait_bfd(s1, timeout=20)
        bfdd = lab.bfdd_pid(s1)
        assert bfdd is not None
        status = _status(bfdd)
        assert 0 not in {int(uid) for uid in status["Uid"].split()}
        assert int(status["CapBnd"], 16) == BFD_CAPS and status["NoNewPrivs"] == "1"
        lab.kill_anycastd(s1)
        lab.wait_server(s1, present=False, timeout=1.0)
        wait_until(lambda: lab.bfdd_pid(s1) is None, 1.0, what="bfdd dying with the unprivileged anycastd")

        # the unit without its drop-in: refused at start, saying what to add
        config = daemons.anycastd_paths(lab.lab, s1)[0]
        argv = [*daemons.as_user(user, daemons.SIDECAR_CAPABILITIES), sys.executable, "-m", "anycastd", "run"]
        result = lab.lab.exec(lab.lab.ns(s1.name), *argv, "--config", str(config), check=False)
        assert result.returncode == 1
        assert "bfdd cannot start: it needs CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_ADMIN" in result.stderr
        assert "packaging/systemd/anycastd.service.d/bfd.conf" in result.stderr
        assert lab.bfdd_pid(s1) is None
    finally:
        lab.kill_anycastd(s1)
        lab.start_anycastd(s1)  # as root again, for the other tests of this module
