"""The process ExaBGP runs as its API helper: a relay with a dead man's switch.

ExaBGP speaks its API over the stdin/stdout of a child it starts. This helper
is that child. It connects to anycastd's Unix socket and relays lines both
ways, and it is where fail-closed is enforced from outside anycastd:

* anycastd writes a heartbeat line (consumed here, never sent to ExaBGP)
  several times per watchdog period, but only while its probe loops are
  making progress;
* if no line arrives for ``watchdog`` seconds (anycastd stopped, frozen or
  deadlocked) or the socket closes (anycastd died), the helper terminates its
  parent ExaBGP. ExaBGP closes its BGP sessions on the way out and the router
  drops this server's paths at once;
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
import sys
import time

HEARTBEAT = b"#anycastd-heartbeat"
CONNECT_FOR = 10.0
PR_SET_PDEATHSIG = 1


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


def relay(path: str, watchdog: float) -> int:
    try:
        sock = _connect(path)
    except OSError as exc:
        return _fire(f"cannot connect to anycastd at {path}: {exc.strerror}")
    sock.setblocking(False)
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "exabgp")
    sel.register(sock, selectors.EVENT_READ, "anycastd")
    last = time.monotonic()
    pending = b""
    while True:
        remaining = last + watchdog - time.monotonic()
        if remaining <= 0:
            return _fire(f"no word from anycastd for {watchdog:g} s")
        for key, _ in sel.select(remaining):
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
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                return _fire("anycastd closed the connection")
            last = time.monotonic()
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if line and line != HEARTBEAT)
            while out:
                out = out[os.write(stdout, out) :]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        _say("usage: exabgp_helper SOCKET WATCHDOG_SECONDS (run by ExaBGP, not by hand)")
        return 2
    if not _die_with_parent():
        _say("ExaBGP is already gone; nothing to guard")
        return 1
    return relay(argv[1], float(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
