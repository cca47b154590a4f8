"""bfdd's words as anycastd speaks them: its configuration, its answers, its control socket. Pure: no I/O.

bfdd is another program: what it says is parsed as untrusted input (bounded JSON, a shape
checked field by field, anything unexpected skipped or refused with BfdError), and every word
of its configuration is a typed value quoted by construction (anycastd.core.syntax). The
process that speaks them is anycastd.announce.bfdd.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from anycastd.config.sidecar import BfdSettings
from anycastd.core.net import IPAddress
from anycastd.core.syntax import vtysh_command
from anycastd.errors import AnnounceError
from anycastd.untrusted import loads

#: The states of a BFD session as bfdd names them; "unknown" until bfdd has said.
SESSION_STATES = ("up", "down", "init", "shutdown", "unknown")


class BfdError(AnnounceError):
    """bfdd could not be started, read, or understood."""


@dataclass(frozen=True)
class BfdPeer:
    """One BFD session: to the neighbor's address, from this server's, single-hop unless routed."""

    neighbor: IPAddress
    local: IPAddress
    settings: BfdSettings
    multihop: bool = False


def render_config(peers: Sequence[BfdPeer]) -> str:
    """bfdd's configuration: one ``peer`` block per session, every word a typed value (anycastd.core.syntax)."""
    lines = ["! written by anycastd for its BGP sessions with BFD: do not edit", "bfd"]
    for p in peers:
        words: list[str | int | IPAddress] = [
            "peer",
            p.neighbor,
            *(["multihop"] if p.multihop else []),
            "local-address",
        ]
        lines.append(" " + vtysh_command(*words, p.local))
        ms = p.settings.interval_ms
        lines += [
            f"  {vtysh_command('transmit-interval', ms)}",
            f"  {vtysh_command('receive-interval', ms)}",
            f"  {vtysh_command('detect-multiplier', p.settings.multiplier)}",
            " exit",
        ]
    lines += ["exit", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Session:
    """What bfdd says of one session."""

    state: str
    diagnostic: str
    remote_diagnostic: str
    transmit_ms: int | None  # the negotiated intervals: ours, and the router's
    remote_receive_ms: int | None
    detect_multiplier: int | None
    remote_detect_multiplier: int | None
    since: float | None  # seconds in this state, as bfdd counts (uptime or downtime)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "diagnostic": self.diagnostic,
            "remote_diagnostic": self.remote_diagnostic,
            "transmit_ms": self.transmit_ms,
            "remote_receive_ms": self.remote_receive_ms,
            "detect_multiplier": self.detect_multiplier,
            "remote_detect_multiplier": self.remote_detect_multiplier,
            "seconds_in_state": self.since,
        }


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32 else None


def _word(value: Any) -> str:
    return value[:64] if isinstance(value, str) and value.isprintable() else ""


def parse_peers(text: str) -> dict[IPAddress, Session]:
    """The sessions in bfdd's ``show bfd peers json``, by peer address. bfdd is another program: what
    does not have the expected shape is skipped, and text that is not JSON raises BfdError."""
    try:
        data = loads(text or "[]")
    except (ValueError, RecursionError):
        raise BfdError(f"bfdd's answer is not JSON: {text[:80]!r}") from None
    if not isinstance(data, list):
        raise BfdError(f"bfdd's answer is not a list of sessions: {text[:80]!r}")
    out: dict[IPAddress, Session] = {}
    for entry in data:
        if not isinstance(entry, dict):
            continue
        try:
            peer = ipaddress.ip_address(str(entry.get("peer")))
        except ValueError:
            continue
        state = entry.get("status")
        out[peer] = Session(
            state if state in SESSION_STATES else "unknown",
            _word(entry.get("diagnostic")),
            _word(entry.get("remote-diagnostic")),
            _number(entry.get("transmit-interval")),
            _number(entry.get("remote-receive-interval")),
            _number(entry.get("detect-multiplier")),
            _number(entry.get("remote-detect-multiplier")),
            _number(entry.get("uptime", entry.get("downtime"))),
        )
    return out


# bfdd's control socket (--bfdctl; FRR's bfdd/bfdctl.h): state changes as they happen ------------------------

#: struct bfd_control_msg: the payload's length (network order), an id echoed in the answer, type, version.
CONTROL_HEADER = struct.Struct("!IHBB")
_BMT_RESPONSE, _BMT_NOTIFY, _BMV_VERSION_1 = 1, 4, 1
#: BCM_NOTIFY_PEER_STATE: every session's state, now and on each change (bfdd copies the 8 bytes as they are).
_NOTIFY_PEER_STATE = struct.pack("=Q", 1)
#: The most a notification may be: one session's JSON is about 300 bytes.
MAX_CONTROL_MESSAGE = 1 << 16
#: bfdd's words for a session's state in a notification, as SESSION_STATES says them.
_NOTIFIED_STATES = {"up": "up", "down": "down", "init": "init", "adm-down": "shutdown"}


def subscribe_message() -> bytes:
    return CONTROL_HEADER.pack(len(_NOTIFY_PEER_STATE), 1, _BMT_NOTIFY, _BMV_VERSION_1) + _NOTIFY_PEER_STATE


def parse_notification(kind: int, body: bytes) -> tuple[IPAddress, str] | None:
    """(peer, state) from one control-socket message, or None if it is not a session's state."""
    if kind != _BMT_NOTIFY:
        return None
    try:
        data = loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise BfdError(f"bfdd's notification is not JSON: {body[:80]!r}") from None
    if not isinstance(data, dict) or data.get("op") != "status":
        return None
    try:
        peer = ipaddress.ip_address(str(data.get("peer-address")))
    except ValueError:
        return None
    return peer, _NOTIFIED_STATES.get(str(data.get("state")), "unknown")
