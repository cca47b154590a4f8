"""The control socket's server: it assumes nothing of its clients.

Theory of operation
-------------------
The socket faces people and scripts, so it assumes nothing of its clients:

* A line longer than ``MAX_LINE`` closes the connection.
* A request must arrive whole within ``REQUEST_TIMEOUT`` of the connection
  (or of the previous reply): a client that says nothing, or trickles bytes
  (a slowloris), is dropped. A reply must be taken within ``WRITE_TIMEOUT``:
  a client that never reads cannot hold the daemon's buffers.
* No more than ``MAX_CLIENTS`` connections are served at once, and the cap
  never locks the operator out: when it is reached, the connection that has
  waited longest *without a request being answered* (idle, or trickling) is
  closed to make room. Only when every slot is busy answering (``withdraw
  --wait``) is a newcomer told the daemon is busy.
* Who is connected comes from the kernel (SO_PEERCRED), not from the client.
  Reading (``status``, ``check``) is open to whoever can open the socket;
  changing state (``withdraw``, ``announce``) also needs the peer to be root,
  anycastd's own user, or a member of ``control.group``.

The socket is created mode 0660, owned by anycastd's user and, when
``control.group`` is set, that group (anycastd's user must be a member); its
directory is 0750 with the same group. None of this can reach the probes or
the routes: a request only ever reaches the daemon as a decoded value.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import time
from pathlib import Path
from typing import Any

from anycastd.control.protocol import (
    MAX_LINE,
    AnnounceRequest,
    ControlError,
    Controller,
    ErrorReply,
    Reply,
    WithdrawRequest,
    decode,
    encode_reply,
)
from anycastd.errors import AnycastdError
from anycastd.peer import Peer, peer_of

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
MAX_CLIENTS = 32


class NotAllowed(ControlError):
    """The peer may read, but not change, the daemon's state."""


CHANGES_STATE = (WithdrawRequest, AnnounceRequest)


def may_change_state(peer: Peer, group: str | None) -> bool:
    """Root, anycastd's own user, or a member of the control group (primary or supplementary)."""
    if peer.uid in (0, os.geteuid()):
        return True
    if group is None or peer.uid < 0:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
        if peer.gid == gid:
            return True
        account = pwd.getpwuid(peer.uid)
    except KeyError:
        return False
    return gid in os.getgrouplist(account.pw_name, account.pw_gid)


class ControlServer:
    def __init__(self, path: Path, controller: Controller, group: str | None = None) -> None:
        self.path = path
        self.controller = controller
        self.group = group
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        # For each connection: since when it has been waiting for a request (None: one is being answered).
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._writers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
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
            if self.group:
                # Members of the group must be able to reach the socket through its directory.
                gid = grp.getgrnam(self.group).gr_gid
                os.chown(self.path, -1, gid)
                os.chown(self.path.parent, -1, gid)
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
        if len(self._clients) >= MAX_CLIENTS and not self._evict_one():
            writer.write(encode_reply(ErrorReply(f"busy: {MAX_CLIENTS} requests are being answered")))
            writer.close()
            return
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._clients.add(task)
        self._waiting[task] = time.monotonic()
        self._writers[task] = writer
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._clients.discard(task)
        self._waiting.pop(task, None)
        self._writers.pop(task, None)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for its request; False if every one is being answered."""
        waiting = [(since, id(task), task) for task, since in self._waiting.items() if not task.done()]
        if not waiting:
            return False
        _, _, oldest = min(waiting)
        writer = self._writers.get(oldest)
        if writer is not None:
            writer.transport.abort()  # at once: a task cancelled before it ever ran would not close it
        self._forget(oldest)
        oldest.cancel()
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        me = asyncio.current_task()
        try:
            while True:
                if me is not None and me in self._clients:
                    self._waiting[me] = time.monotonic()
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                except TimeoutError:
                    writer.write(encode_reply(ErrorReply(f"no request within {REQUEST_TIMEOUT:g} s; closing")))
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode_reply(ErrorReply(f"request longer than {MAX_LINE} bytes; closing")))
                    return
                if not line:
                    return
                if not line.endswith(b"\n"):
                    return  # half a request and then the end: nothing to act on
                if not line.strip():
                    continue
                if me is not None:
                    self._waiting.pop(me, None)
                writer.write(encode_reply(await self._answer(line, peer)))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            await _close(writer)

    async def _answer(self, line: bytes, peer: Peer) -> Reply | ErrorReply:
        try:
            request = decode(line)
            if isinstance(request, CHANGES_STATE) and not may_change_state(peer, self.group):
                raise NotAllowed(
                    f"{peer.user} may read the status but not change it: run as root, as anycastd's user, or as "
                    f"a member of the control group ({self.group or 'none is configured: control.group'})"
                )
            return await self.controller.handle(request, peer)
        except AnycastdError as exc:  # ControlError and every other error meant for a person
            return ErrorReply(str(exc))
        except Exception:  # a bug must not take the daemon down through its socket
            log.exception("control request %r failed", line[:200])
            return ErrorReply("internal error; see anycastd's log")


async def _close(writer: asyncio.StreamWriter) -> None:
    """Flush what is left and close; a client that does not read within WRITE_TIMEOUT is cut off (abort)."""
    try:
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
    finally:
        writer.close()  # also when cancelled while draining: the transport must not leak
    try:
        await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT)
    except TimeoutError:
        writer.transport.abort()  # close() waits for the peer to read what is buffered; it never will
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()  # now prompt: the socket is closed on the next turn of the loop
    except (ConnectionError, OSError):
        pass


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
