"""Who is at the other end of a Unix socket, as the kernel says (SO_PEERCRED), not as the client claims.

The control socket (anycastd.control.server) asks it of every client, and the ExaBGP supervisor
of its helper (anycastd.announce.exabgp): a foundation both layers stand on.
"""

from __future__ import annotations

import asyncio
import pwd
import socket
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel says (SO_PEERCRED), not as the client claims."""

    pid: int
    uid: int
    gid: int = -1

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    """The process at the other end of a Unix stream connection (pid 0 and uid -1 if the kernel cannot say)."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, AttributeError, struct.error):
        return Peer(0, -1)
    return Peer(pid, uid, gid)
