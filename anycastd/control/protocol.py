"""The control protocol: line-delimited JSON between anycastctl and anycastd.

Theory of operation
-------------------
One request is one line of JSON, one reply is one line of JSON. The request
types are frozen dataclasses shared by both sides: the CLI builds one and
``encode``s it (anycastd.control.client); the daemon ``decode``s every line
into one of them before anything acts on it (anycastd.control.server), so a
malformed request is refused whole. Each request has its reply type
(``REPLY_OF``), also a frozen dataclass: the daemon's ``Controller`` returns
one, ``encode_reply`` writes it as ``{"ok": true, ...fields}`` (or an
``ErrorReply`` as ``{"ok": false, "error": "what to fix"}``), and the client
``decode_reply``s the line back into the type its request expects, refusing
anything else. The status reply carries the status document, whose shape is
versioned by its own ``version`` field (docs/operations.md). ``Peer`` is who
is on the other end, as the kernel says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Protocol, TypeVar

from anycastd.errors import AnycastdError
from anycastd.peer import Peer
from anycastd.untrusted import loads

MAX_LINE = 16 * 1024
MAX_REASON = 200
MAX_WAIT = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


class ControlError(AnycastdError):
    """A control request failed, or the control socket could not be used."""


class Unreachable(ControlError):
    """No anycastd listens on the control socket (it is missing, or left behind by a dead daemon)."""


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
    #: Keep the path, tagged GRACEFUL_SHUTDOWN, while the probes pass (the sidecar only). Sent only when
    #: true, so that a plain withdraw reads as it did before (an older anycastd refuses the field by name).
    soft: bool = False


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
    if body.get("soft") is False:
        del body["soft"]
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
        data = loads(line)
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
    soft = data.get("soft", False)
    if not isinstance(soft, bool):
        raise ProtocolError("withdraw: 'soft' must be true or false")
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
        soft,
    )


# replies -------------------------------------------------------------------

_OMIT_NONE = {"omit_none": True}  # a field that is left out of the JSON while it is None


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe's result as a reply shows it (also the ``last`` of each check in the status document)."""

    check: int
    ok: bool
    outcome: str
    kind: str
    reason: str
    latency_ms: float | None
    at: str
    server: str | None = field(default=None, metadata=_OMIT_NONE)  # `anycastd router`: which server


@dataclass(frozen=True)
class DrainOutcome:
    """How ``withdraw --wait`` ended: ``drained`` is what anycastctl's exit code follows."""

    drained: bool
    verdict: str
    method: str
    waited: float
    packets: int | None
    note: str


@dataclass(frozen=True)
class StatusReply:
    document: dict[str, Any]  # the status document (docs/operations.md), versioned by its "version"


@dataclass(frozen=True)
class WithdrawReply:
    withdrawn: tuple[str, ...]
    warning: str | None = field(default=None, metadata=_OMIT_NONE)
    drain: DrainOutcome | None = field(default=None, metadata=_OMIT_NONE)  # only for --wait


@dataclass(frozen=True)
class AnnounceReply:
    announced: tuple[str, ...]
    not_in_maintenance: tuple[str, ...]
    damping_cleared: tuple[str, ...] = ()  # whose flap penalty was cleared (they were suppressed)


@dataclass(frozen=True)
class CheckReply:
    service: str
    checks: tuple[ProbeOutcome, ...]


@dataclass(frozen=True)
class ErrorReply:
    error: str


Reply = StatusReply | WithdrawReply | AnnounceReply | CheckReply
REPLY_OF: dict[type[Request], type[Reply]] = {
    StatusRequest: StatusReply,
    WithdrawRequest: WithdrawReply,
    AnnounceRequest: AnnounceReply,
    CheckRequest: CheckReply,
}


def plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in fields(value)
            if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)
        }
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def reply_json(reply: Reply | ErrorReply) -> dict[str, Any]:
    """The reply as the JSON object on the wire (what ``anycastctl --json`` prints)."""
    if isinstance(reply, ErrorReply):
        return {"ok": False, "error": reply.error}
    if isinstance(reply, StatusReply):
        return {"ok": True, **reply.document}
    return {"ok": True, **plain(reply)}


def encode_reply(reply: Reply | ErrorReply) -> bytes:
    return json.dumps(reply_json(reply), separators=(",", ":"), default=str).encode() + b"\n"


class _Shape:
    """Reads one JSON object of a reply, raising ControlError that names what is wrong."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise ControlError(f"anycastd sent an unexpected reply: {what} is not an object")
        self.data, self.what = data, what

    def get(self, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise ControlError(f"anycastd sent an unexpected reply: {self.what}.{key} is {value!r}")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list)
        if not all(isinstance(v, str) for v in value):
            raise ControlError(f"anycastd sent an unexpected reply: {self.what}.{key} holds a non-name")
        return tuple(value)


def probe_outcome(data: Any, what: str = "check") -> ProbeOutcome:
    d = _Shape(data, what)
    return ProbeOutcome(
        d.get("check", int),
        d.get("ok", bool),
        d.get("outcome", str),
        d.get("kind", str),
        d.get("reason", str),
        d.get("latency_ms", (int, float), optional=True),
        d.get("at", str),
        d.get("server", str, optional=True),
    )


def _drain_outcome(data: Any) -> DrainOutcome:
    d = _Shape(data, "drain")
    return DrainOutcome(
        d.get("drained", bool),
        d.get("verdict", str),
        d.get("method", str),
        float(d.get("waited", (int, float))),
        d.get("packets", int, optional=True),
        d.get("note", str),
    )


def decode_reply(request: Request, line: bytes) -> Reply:
    """The reply to ``request``, typed; an error reply or a malformed line raises ControlError."""
    try:
        data = loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ControlError(f"anycastd sent a reply that is not JSON: {line[:200]!r}") from None
    d = _Shape(data, "reply")
    if d.get("ok", bool) is False:
        raise ControlError(d.get("error", str, optional=True) or "anycastd refused the request")
    expected = REPLY_OF[type(request)]
    if expected is StatusReply:
        if not isinstance(data.get("services"), list):
            raise ControlError("anycastd sent an unexpected reply: a status without services")
        return StatusReply({k: v for k, v in data.items() if k != "ok"})
    if expected is WithdrawReply:
        drain = data.get("drain")
        return WithdrawReply(
            d.names("withdrawn"),
            d.get("warning", str, optional=True),
            _drain_outcome(drain) if drain is not None else None,
        )
    if expected is AnnounceReply:
        cleared = d.names("damping_cleared") if "damping_cleared" in data else ()
        return AnnounceReply(d.names("announced"), d.names("not_in_maintenance"), cleared)
    checks = d.get("checks", list)
    return CheckReply(d.get("service", str), tuple(probe_outcome(c, f"checks[{i}]") for i, c in enumerate(checks)))


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


class Controller(Protocol):
    async def handle(self, request: Request, peer: Peer) -> Reply:
        """Carry out ``request``; raise ControlError with a message for the client."""
        ...
