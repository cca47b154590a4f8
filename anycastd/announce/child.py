"""Child processes that must not outlive anycastd (ExaBGP, bfdd): what they are started with.

The kernel sends a child SIGKILL when anycastd dies (PR_SET_PDEATHSIG), however anycastd dies:
SIGKILL, OOM, a crash. It keeps that request only while the child changes no credential (the
kernel clears it on a change of effective user or group), so every child runs as anycastd's own
user: ``own_user`` is what ExaBGP and bfdd are told to run as, which makes their switch of user a
no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import signal

import tenacity

from anycastd.announce.exabgp_helper import PR_SET_PDEATHSIG

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)
#: How long a child may take to stop on SIGTERM before it is killed.
STOP_WAIT = 5.0


def die_with_parent() -> None:
    """Runs in the child between fork and exec: die when anycastd dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def own_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a name: ExaBGP switches user only as root, and root has one
        return "root"


async def stop(proc: asyncio.subprocess.Process | None, name: str) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited within STOP_WAIT; nothing if it is not running."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_WAIT)
    except TimeoutError:
        log.warning("%s did not stop within %g s of SIGTERM; killing it", name, STOP_WAIT)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def restart_delay(wait: tenacity.wait.wait_base, attempt: int) -> float:
    """How long to wait before starting a child again, for its ``attempt``-th start in a row (tenacity's wait)."""
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return float(wait(state))


def exit_text(code: int | None) -> str:
    """How a child ended, for the log: its exit code, the signal that killed it, or that it never started."""
    if code is None:
        return "it could not be started"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
