"""BGP NOTIFICATION codes by name, so that a session that went down says why in words.

ExaBGP reports a closed session as, e.g., ``notification received (6,4)``; the
journal should say ``Cease / Administrative Reset``. The names are those of the
IANA "BGP Error (Notification) Codes" and "BGP Error Subcodes" registries
(RFC 4271, 4486, 6608, 7313, 8538, 9234, 9384).
"""

from __future__ import annotations

import re

CODES = {
    1: "Message Header Error",
    2: "OPEN Message Error",
    3: "UPDATE Message Error",
    4: "Hold Timer Expired",
    5: "Finite State Machine Error",
    6: "Cease",
    7: "ROUTE-REFRESH Message Error",
}

SUBCODES = {
    (1, 1): "Connection Not Synchronized",
    (1, 2): "Bad Message Length",
    (1, 3): "Bad Message Type",
    (2, 1): "Unsupported Version Number",
    (2, 2): "Bad Peer AS",
    (2, 3): "Bad BGP Identifier",
    (2, 4): "Unsupported Optional Parameter",
    (2, 6): "Unacceptable Hold Time",
    (2, 7): "Unsupported Capability",
    (2, 11): "Role Mismatch",
    (3, 1): "Malformed Attribute List",
    (3, 2): "Unrecognized Well-known Attribute",
    (3, 3): "Missing Well-known Attribute",
    (3, 4): "Attribute Flags Error",
    (3, 5): "Attribute Length Error",
    (3, 6): "Invalid ORIGIN Attribute",
    (3, 8): "Invalid NEXT_HOP Attribute",
    (3, 9): "Optional Attribute Error",
    (3, 10): "Invalid Network Field",
    (3, 11): "Malformed AS_PATH",
    (5, 1): "Receive Unexpected Message in OpenSent State",
    (5, 2): "Receive Unexpected Message in OpenConfirm State",
    (5, 3): "Receive Unexpected Message in Established State",
    (6, 1): "Maximum Number of Prefixes Reached",
    (6, 2): "Administrative Shutdown",
    (6, 3): "Peer De-configured",
    (6, 4): "Administrative Reset",
    (6, 5): "Connection Rejected",
    (6, 6): "Other Configuration Change",
    (6, 7): "Connection Collision Resolution",
    (6, 8): "Out of Resources",
    (6, 9): "Hard Reset",
    (6, 10): "BFD Down",
    (7, 1): "Invalid Message Length",
}

_NUMBERS = re.compile(r"notification (sent|received) \((\d{1,3}),(\d{1,3})\)")


def name(code: int, subcode: int) -> str:
    """``Cease / Administrative Reset``; a number not in the registries stays a number."""
    words = CODES.get(code, f"error code {code}")
    if subcode == 0:
        return words
    return f"{words} / {SUBCODES.get((code, subcode), f'subcode {subcode}')}"


def decoded(text: str) -> str:
    """``text`` with each ``notification sent|received (C,S)`` given its name, the numbers kept after it."""

    def named(m: re.Match[str]) -> str:
        code, subcode = int(m.group(2)), int(m.group(3))
        return f"notification {m.group(1)}: {name(code, subcode)} ({code},{subcode})"

    return _NUMBERS.sub(named, text)
