"""The control socket: line-delimited JSON between anycastctl and anycastd.

Theory of operation
-------------------
One request is one line of JSON, one reply is one line of JSON. The request
types are frozen dataclasses shared by both sides: the CLI builds one and
``encode``s it; the daemon ``decode``s every line into one of them before
anything acts on it, so a malformed request is refused whole. Replies are
``{"ok": true, ...}`` or ``{"ok": false, "error": "what to fix"}``.

The socket faces people and scripts, so it assumes nothing of its clients:
a line longer than ``MAX_LINE`` closes the connection; a client that
connects and says nothing for ``IDLE_TIMEOUT`` is dropped; no more than
``MAX_CLIENTS`` connections are served at once. None of this can reach the
probes or the routes: a request only ever reaches the daemon as a decoded
value.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import re
import socket
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from anycastd.errors import AnycastdError

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024
IDLE_TIMEOUT = 10.0
MAX_CLIENTS = 32
MAX_REASON = 200
MAX_WAIT = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ControlError(AnycastdError):
    """A control request failed, or the control socket could not be used."""


class ProtocolError(ControlError):
    """A control request was malformed."""


# requests ------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRequest:
    service: str | None = None


@dataclass(frozen=True)
class WithdrawRequest:
    service: str | None  # None: every service
    reason: str
    user: str = ""  # who the client says it is acting for (SUDO_USER); the daemon adds the socket's uid
    wait: bool = False
    timeout: float | None = None  # None: drain.timeout from the configuration
    server: str | None = None  # `anycastd router`: drain this server (in every service it serves)


@dataclass(frozen=True)
class AnnounceRequest:
    service: str | None  # None: every service
    server: str | None = None  # `anycastd router`: end this server's maintenance


@dataclass(frozen=True)
class CheckRequest:
    service: str


Request = StatusRequest | WithdrawRequest | AnnounceRequest | CheckRequest

COMMANDS: dict[str, type[Request]] = {
    "status": StatusRequest,
    "withdraw": WithdrawRequest,
    "announce": AnnounceRequest,
    "check": CheckRequest,
}
_COMMAND_OF = {cls: name for name, cls in COMMANDS.items()}


def encode(request: Request) -> bytes:
    body = {"command": _COMMAND_OF[type(request)], **asdict(request)}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _service(value: Any, required: bool, what: str = "service") -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise ProtocolError(f"'{what}' must be a {what} name, got {value!r}")
    return value


def _server(data: dict[str, Any], command: str, service: str | None) -> str | None:
    server = _service(data.get("server"), required=False, what="server")
    if server is not None and service is not None:
        raise ProtocolError(f"{command}: give a service or a server, not both")
    return server


def decode(line: bytes) -> Request:
    """Parse one request line; raise ProtocolError saying what is wrong with it."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a JSON request ({exc})") from None
    except RecursionError:
        raise ProtocolError("not a JSON request (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ProtocolError("a request is a JSON object with a 'command'")
    command = data.pop("command", None)
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command!r} (expected one of: {', '.join(COMMANDS)})")
    cls = COMMANDS[command]
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise ProtocolError(f"{command}: unknown field(s) {', '.join(sorted(unknown))}")
    if cls is StatusRequest:
        return StatusRequest(_service(data.get("service"), required=False))
    if cls is AnnounceRequest:
        service = _service(data.get("service"), required=False)
        return AnnounceRequest(service, _server(data, "announce", service))
    if cls is CheckRequest:
        return CheckRequest(_service(data.get("service"), required=True) or "")
    reason, user, wait, timeout = data.get("reason"), data.get("user", ""), data.get("wait", False), data.get("timeout")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON or not reason.isprintable():
        raise ProtocolError(f"withdraw: 'reason' must be 1 to {MAX_REASON} printable characters")
    if not isinstance(user, str) or len(user) > 64 or not user.isprintable():
        raise ProtocolError("withdraw: 'user' must be a short printable string")
    if not isinstance(wait, bool):
        raise ProtocolError("withdraw: 'wait' must be true or false")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_WAIT
    ):
        raise ProtocolError(f"withdraw: 'timeout' must be a number of seconds in (0, {MAX_WAIT:g}]")
    service = _service(data.get("service"), required=False)
    return WithdrawRequest(
        service,
        reason.strip(),
        user,
        wait,
        float(timeout) if timeout is not None else None,
        _server(data, "withdraw", service),
    )


# the daemon's side -----------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def by_name(services: Sequence[N], name: str | None) -> list[N]:
    """The service called ``name``, or every service for None; an unknown name is the client's error."""
    if name is None:
        return list(services)
    found = [s for s in services if s.name == name]
    if not found:
        known = ", ".join(s.name for s in services)
        raise ControlError(f"no service {name!r} (configured: {known})")
    return found


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel says (SO_PEERCRED), not as the client claims."""

    pid: int
    uid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


class Controller(Protocol):
    async def handle(self, request: Request, peer: Peer) -> dict[str, Any]:
        """Carry out ``request``; raise ControlError with a message for the client."""
        ...


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    """The process at the other end of a Unix stream connection (pid 0 and uid -1 if the kernel cannot say)."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", raw)
    except (OSError, AttributeError, struct.error):
        return Peer(0, -1)
    return Peer(pid, uid)


def _reply(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"


class ControlServer:
    def __init__(self, path: Path, controller: Controller, group: str | None = None) -> None:
        self.path = path
        self.controller = controller
        self.group = group
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def start(self) -> None:
        if await _answers(self.path):
            raise ControlError(
                f"another anycastd is already serving {self.path}; stop it first, or give this one "
                "another control.socket and runtime_dir"
            )
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = await asyncio.start_unix_server(self._accept, path=str(self.path), limit=MAX_LINE)
            os.chmod(self.path, 0o660)
            if os.geteuid() == 0:  # otherwise (tests, a non-root trial run) the caller's ids stay
                gid = grp.getgrnam(self.group).gr_gid if self.group else 0
                os.chown(self.path, 0, gid)
                if self.group:
                    # Members of the group must be able to reach the socket through its directory.
                    os.chown(self.path.parent, 0, gid)
        except (OSError, KeyError) as exc:
            raise ControlError(f"cannot serve the control socket {self.path}: {exc}") from None
        log.info("control socket at %s", self.path)

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Not a coroutine: every connection is registered the moment it exists, so that
        # close() can always find it (a handler task not yet started would leak its socket).
        if self._closed:
            writer.close()
            return
        if len(self._clients) >= MAX_CLIENTS:
            writer.write(_reply({"ok": False, "error": f"busy: {MAX_CLIENTS} clients already connected"}))
            writer.close()
            return
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except TimeoutError:
                    writer.write(_reply({"ok": False, "error": f"no request within {IDLE_TIMEOUT:g} s; closing"}))
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_reply({"ok": False, "error": f"request longer than {MAX_LINE} bytes; closing"}))
                    return
                if not line:
                    return
                if not line.endswith(b"\n"):
                    return  # half a request and then the end: nothing to act on
                if not line.strip():
                    continue
                writer.write(_reply(await self._answer(line, peer)))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            await _close(writer)

    async def _answer(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            request = decode(line)
            return {"ok": True, **await self.controller.handle(request, peer)}
        except AnycastdError as exc:  # ControlError and every other error meant for a person
            return {"ok": False, "error": str(exc)}
        except Exception:  # a bug must not take the daemon down through its socket
            log.exception("control request %r failed", line[:200])
            return {"ok": False, "error": "internal error; see anycastd's log"}


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
    finally:
        writer.close()  # also when cancelled while draining: the transport must not leak
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _answers(path: Path) -> bool:
    """Is a live server listening on ``path``?"""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# the client's side ---------------------------------------------------------


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
