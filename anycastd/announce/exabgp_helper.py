"""The process ExaBGP runs as its API helper: a relay with a dead man's switch.

ExaBGP speaks its API over the stdin/stdout of a child it starts. This helper
is that child. It connects to anycastd's Unix socket and relays lines both
ways, and it is where fail-closed is enforced from outside anycastd:

* anycastd writes a heartbeat line (consumed here, never sent to ExaBGP)
  several times per watchdog period, but only while its probe loops are
  making progress;
* if no heartbeat arrives for ``stall`` seconds (anycastd's ``exabgp.stall``) and anycastd is
  neither running nor waiting for a CPU (stopped, deadlocked, asleep with its
  probe loops stuck), or for ``watchdog`` seconds whatever it is doing (busy,
  or starved of CPU), or the socket closes (anycastd died), the helper kills its
  parent ExaBGP. ExaBGP's BGP sessions close and the router drops this
  server's paths at once. Only the heartbeat counts: the commands anycastd
  sends prove its event loop runs, not that its probe loops do;
* it dies with ExaBGP (PR_SET_PDEATHSIG), also when ExaBGP is SIGKILLed while
  the helper is stopped, so no orphaned helper outlives the tree it guarded.
  The other way round, anycastd kills ExaBGP when the helper's connection
  closes: ExaBGP never runs on without its helper (docs/architecture.md).

ExaBGP runs it by file path, not as ``-m anycastd...``: it imports only the
standard library, so it starts fast and cannot be broken by the code it guards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable

HEARTBEAT = b"#anycastd-heartbeat"
CONNECT_FOR = 10.0
PR_SET_PDEATHSIG = 1
#: How many times, and how far apart, a silent process's state is read before it is called stuck.
STATE_SAMPLES = 3
STATE_GAP = 0.005
#: How often a quiet anycastd seen running is looked at again, between the stall and the watchdog.
STALL_RECHECK = 0.05


def states(pids: list[int]) -> list[str]:
    """Each process's one-letter state (``R`` running or runnable, ``S`` asleep, ``T`` stopped...)
    from /proc/PID/stat, ``""`` for one that is gone."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                out.append(f.read().rsplit(b")", 1)[1].split()[0].decode())
        except (OSError, IndexError, UnicodeDecodeError):
            out.append("")
    return out


def stuck(seen: list[str]) -> bool:
    """Whether processes that owe an answer past the short bound are stuck rather than slow, from their
    states (``seen``, over one or more readings): one is stopped (SIGSTOP, a debugger), dead or gone; or
    none is running or waiting for a CPU, so they sleep with the work undone (a deadlock, a blocked
    write). A process seen running or runnable is slow, busy or starved, and is given the long bound.

    Written here, in the standard-library-only helper, which judges anycastd with it; anycastd judges
    ExaBGP and this helper with the same rule (anycastd.announce.exabgp).
    """
    return stopped(seen) or "R" not in seen


def stopped(seen: list[str]) -> bool:
    """One of them is stopped (``T``, ``t``), dead (``Z``, ``X``) or gone (``""``): no need to look again."""
    return any(state in ("", "T", "t", "Z", "X") for state in seen)


def judge(pids: list[int], sleep: Callable[[float], None] = time.sleep) -> bool:
    """``stuck``, over ``STATE_SAMPLES`` readings ``STATE_GAP`` apart: a busy process caught between two
    time slices is seen running in one of them."""
    seen: list[str] = []
    for sample in range(STATE_SAMPLES):
        if sample:
            sleep(STATE_GAP)
        seen += states(pids)
        if stopped(seen):
            return True
        if "R" in seen:  # not stopped, and running: slow, not stuck
            return False
    return True


def _say(message: str) -> None:
    sys.stderr.write(f"anycastd-exabgp-helper: {message}\n")
    sys.stderr.flush()


def _fire(reason: str) -> int:
    """Take ExaBGP down so its sessions close; the routes go with them.

    SIGKILL, not SIGTERM: the kernel closes the TCP sessions at once either
    way, and an ExaBGP whose log pipe lost its reader may not get far enough
    through a graceful shutdown to do it.
    """
    parent = os.getppid()
    _say(f"{reason}; killing ExaBGP (pid {parent}) so the router withdraws this server's routes")
    with contextlib.suppress(ProcessLookupError):
        os.kill(parent, signal.SIGKILL)
    return 1


def _die_with_parent() -> bool:
    """Ask the kernel for SIGKILL when ExaBGP (our parent) dies; False if it is already gone."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent and parent != 1


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_FOR
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _peer_pid(sock: socket.socket) -> int:
    """anycastd's pid, as the kernel says (SO_PEERCRED); 0 if it cannot say."""
    try:
        return int(struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])
    except (OSError, struct.error):
        return 0


def relay(path: str, watchdog: float, stall: float | None = None) -> int:
    """Relay lines both ways until ExaBGP goes; fire when anycastd goes quiet (see the module's docstring)."""
    stall = min(stall if stall is not None else watchdog, watchdog)
    try:
        sock = _connect(path)
    except OSError as exc:
        return _fire(f"cannot connect to anycastd at {path}: {exc.strerror}")
    anycastd = _peer_pid(sock)
    sock.setblocking(False)
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "exabgp")
    sel.register(sock, selectors.EVENT_READ, "anycastd")
    last = time.monotonic()
    pending = b""
    wait = stall
    while True:
        heard = False  # from anycastd, in this pass: judge it only on a select that found nothing from it
        for key, _ in sel.select(wait):
            if key.data == "exabgp":
                data = os.read(stdin, 65536)
                if not data:
                    return 0  # ExaBGP is gone: nothing left to guard
                sock.setblocking(True)
                try:
                    sock.sendall(data)
                except OSError:
                    return _fire("lost the connection to anycastd")
                finally:
                    sock.setblocking(False)
                continue
            heard = True
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                return _fire("anycastd closed the connection")
            pending += data
            *lines, pending = pending.split(b"\n")
            if HEARTBEAT in lines:
                last = time.monotonic()
            out = b"".join(line + b"\n" for line in lines if line and line != HEARTBEAT)
            while out:
                out = out[os.write(stdout, out) :]
        quiet = time.monotonic() - last
        if quiet >= watchdog:
            return _fire(f"no heartbeat from anycastd for {watchdog:g} s")
        if quiet >= stall and not heard and anycastd and judge([anycastd]):
            (state,) = states([anycastd])
            return _fire(f"no heartbeat from anycastd for {stall:g} s, and it is not running (state {state or 'gone'})")
        wait = stall - quiet if quiet < stall else min(STALL_RECHECK, watchdog - quiet)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        _say("usage: exabgp_helper SOCKET WATCHDOG_SECONDS [STALL_SECONDS] (run by ExaBGP, not by hand)")
        return 2
    if not _die_with_parent():
        _say("ExaBGP is already gone; nothing to guard")
        return 1
    return relay(argv[1], float(argv[2]), float(argv[3]) if len(argv) == 4 else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
