"""The control socket's client: one request, one reply (what anycastctl uses)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from anycastd.control import ControlError, Request, encode


def call(path: Path, request: Request, timeout: float) -> dict[str, Any]:
    """Send one request and return the daemon's reply (which may say ok: false)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}: is anycastd running? (or pass --socket)") from None
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
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"anycastd sent a reply that is not JSON: {data[:200]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"anycastd sent an unexpected reply: {data[:200]!r}")
    return reply
