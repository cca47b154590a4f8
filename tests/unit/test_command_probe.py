"""Command checks run real programs: exit 0 passes, and a program that hangs, forks away, prints megabytes or is
missing fails the probe with its reason, inside its timeout, leaving nothing running."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import time
from pathlib import Path

import pytest

from anycastd.checks.command import CommandProber, first_line
from anycastd.checks.dns import FAILURE_KINDS, ProbeResult
from anycastd.config.checks import Check
from anycastd.core.degradation import ExitRule
from anycastd.core.health import Outcome

SH = "/bin/sh"
V4 = ipaddress.ip_address("192.0.2.10")


def command(*argv: str, timeout: float = 0.5, output_limit: int = 4096) -> Check:
    return Check(V4, kind="command", command=argv, interval=timeout * 2, timeout=timeout, output_limit=output_limit)


def run(check: Check) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = asyncio.run(CommandProber().probe(check))
    return result, time.monotonic() - started


def alive(pid: int) -> bool:
    """Still running a second after it was sent SIGKILL (the kernel delivers it asynchronously)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] in ("Z", "X"):
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize(
    ("argv", "outcome", "kind", "reason"),
    [
        ((SH, "-c", "echo all good; echo second line"), Outcome.OK, "ok", "sh: exit 0: all good"),
        ((SH, "-c", "exit 0"), Outcome.OK, "ok", "sh: exit 0"),
        ((SH, "-c", "echo zone is stale >&2; exit 3"), Outcome.FAIL, "exit", "sh: exit 3: zone is stale"),
        ((SH, "-c", "kill -SEGV $$"), Outcome.FAIL, "exit", "sh: killed by SIGSEGV"),
        (("/nonexistent/program",), Outcome.FAIL, "missing", "program: no such program (/nonexistent/program)"),
    ],
)
def test_a_command_passes_on_exit_0_and_fails_with_its_reason(
    argv: tuple[str, ...], outcome: Outcome, kind: str, reason: str
) -> None:
    result, _ = run(command(*argv))
    assert (result.outcome, result.kind, result.reason) == (outcome, kind, reason)
    assert kind == "ok" or kind in FAILURE_KINDS


def test_a_degraded_exit_code_passes_marked_degraded_and_another_still_fails() -> None:
    check = dataclasses.replace(command(SH, "-c", "echo busy; exit 2"), degraded_when=ExitRule((2, 4)))
    result, _ = run(check)
    assert (result.ok, result.degraded, result.reason) == (True, True, "sh: exit 2 (degraded): busy")
    other, _ = run(dataclasses.replace(check, command=(SH, "-c", "exit 3")))
    assert (other.ok, other.degraded, other.kind) == (False, False, "exit")
    healthy, _ = run(dataclasses.replace(check, command=(SH, "-c", "exit 0")))
    assert (healthy.ok, healthy.degraded) == (True, False)


def test_a_program_that_cannot_be_run_fails_with_the_reason(tmp_path: Path) -> None:
    script = tmp_path / "check"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)  # not executable (root too needs an x bit)
    result, _ = run(command(str(script)))
    assert (result.outcome, result.kind) == (Outcome.FAIL, "missing")
    assert result.reason == f"check: cannot run {script}: permission denied"


def test_a_command_that_hangs_is_killed_with_its_whole_process_group_at_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    result, took = run(command(SH, "-c", f"sleep 30 & echo $! > {pids}; sleep 30", timeout=0.3))
    assert (result.outcome, result.kind) == (Outcome.FAIL, "timeout")
    assert result.reason == "sh: no exit within 300 ms (timeout); killed"
    assert took < 2.0
    assert not alive(int(pids.read_text()))  # the program's own child went with it


def test_a_command_that_forks_away_is_judged_by_its_exit_and_what_it_left_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the child keeps the output pipe open: the probe must not wait for it
    result, took = run(command(SH, "-c", f"sleep 30 & echo $! > {pids}; echo started it; exit 0", timeout=2.0))
    assert (result.outcome, result.reason) == (Outcome.OK, "sh: exit 0: started it")
    assert took < 1.0
    assert not alive(int(pids.read_text()))


def test_a_command_that_prints_megabytes_fails_at_its_output_limit() -> None:
    result, took = run(command("yes", "a line of output", output_limit=1000, timeout=2.0))
    assert (result.outcome, result.kind) == (Outcome.FAIL, "output")
    assert result.reason == "yes: printed more than 1000 bytes (output_limit); killed"
    assert took < 1.0


def test_output_up_to_the_limit_is_fine() -> None:
    result, _ = run(command(SH, "-c", "head -c 1000 /dev/zero | tr '\\0' x", output_limit=1000))
    assert result.outcome is Outcome.OK


def test_the_environment_is_minimal_and_stdin_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYCASTD_SECRET", "must-not-leak")
    result, _ = run(command(SH, "-c", "env | sort | tr '\\n' ' '; cat; pwd"))
    assert (
        result.reason == "sh: exit 0: LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "PWD=/ /"
    )


def test_the_address_is_filled_in_and_nothing_else() -> None:
    check = command("printf", "%s|%s|%s", "{address}", "@{address}", "{target} $HOME")
    result, _ = run(check)
    assert result.reason == f"printf: exit 0: {V4}|@{V4}|{{target}} $HOME"


def test_the_first_line_shown_is_printable_and_bounded() -> None:
    assert first_line(b"\n\n  \x1b[31mred\x07 \n") == "?[31mred?"
    assert first_line(b"\xff\xfe bytes") == "\ufffd\ufffd bytes"
    assert first_line(b"x" * 500) == "x" * 197 + "..."
    assert first_line(b"") == ""


def test_a_hanging_command_does_not_stall_other_checks() -> None:
    async def go() -> tuple[ProbeResult, ProbeResult, float]:
        prober = CommandProber()
        hang = asyncio.ensure_future(prober.probe(command("sleep", "30", timeout=1.0)))
        started = time.monotonic()
        quick = await prober.probe(command("true"))
        quick_took = time.monotonic() - started
        return await hang, quick, quick_took

    hang, quick, quick_took = asyncio.run(go())
    assert hang.kind == "timeout" and quick.ok
    assert quick_took < 0.5


def test_no_descriptor_is_left_open() -> None:
    async def go() -> int:
        prober = CommandProber()
        for _ in range(20):
            await prober.probe(command(SH, "-c", "sleep 30 & echo x", timeout=1.0))
        return len(os.listdir("/proc/self/fd"))

    before = len(os.listdir("/proc/self/fd"))
    assert asyncio.run(go()) <= before + 3  # the event loop's own


def test_a_probe_cancelled_midway_kills_its_program(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    async def go() -> None:
        task = asyncio.ensure_future(CommandProber().probe(command(SH, "-c", f"echo $$ > {pids}; sleep 30", timeout=5)))
        while not pids.exists() or not pids.read_text().strip():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not alive(int(pids.read_text()))
