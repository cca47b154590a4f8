"""The control socket's client: one request, one reply (what anycastctl uses)."""

from __future__ import annotations

import socket
from pathlib import Path

from anycastd.control.protocol import ControlError, Reply, Request, Unreachable, decode_reply, encode


def call(path: Path, request: Request, timeout: float) -> Reply:
    """Send one request and return the daemon's typed reply; a refusal raises ControlError with its reason."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise Unreachable(f"no control socket at {path}: is anycastd running? (or pass --socket)") from None
        except ConnectionRefusedError:
            raise Unreachable(f"nothing listens on {path}: anycastd is not running") from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {path}: run as root or as a member of the configured control.group"
            ) from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(encode(request))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"anycastd did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the connection to anycastd: {exc.strerror or exc}") from None
    return decode_reply(request, data)
