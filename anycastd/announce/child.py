"""Child processes that must not outlive anycastd (ExaBGP, bfdd): what they are started with.

The kernel sends a child SIGKILL when anycastd dies (PR_SET_PDEATHSIG), however anycastd dies:
SIGKILL, OOM, a crash. It keeps that request only while the child changes no credential (the
kernel clears it on a change of effective user or group), so every child runs as anycastd's own
user: ``own_user`` is what ExaBGP and bfdd are told to run as, which makes their switch of user a
no-op.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal

from anycastd.announce.exabgp_helper import PR_SET_PDEATHSIG

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Runs in the child between fork and exec: die when anycastd dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def own_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a name: ExaBGP switches user only as root, and root has one
        return "root"
