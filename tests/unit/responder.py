"""A tiny real DNS responder on 127.0.0.1 whose behaviour a test sets.

It answers over UDP and TCP on one random port. ``mode`` chooses what it
does with the next queries: answer properly, answer with another rcode or
record, send garbage, answer with the wrong id, or stay silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rrset


@dataclass
class Responder:
    port: int = 0
    mode: str = "ok"  # ok | servfail | wrong-answer | garbage | wrong-id | silent | drop-first
    #: A validating resolver's answer: the AD bit set when the query asks for it (AD or DO, RFC 6840 5.7).
    validated: bool = False
    asked_ad: int = 0  # queries that set the AD bit
    answer: str = "healthy"
    queries: int = 0
    _dropped: set[int] = field(default_factory=set)

    def respond(self, wire: bytes) -> bytes | None:
        self.queries += 1
        query = dns.message.from_wire(wire)
        if self.mode == "silent":
            return None
        if self.mode == "drop-first" and query.id not in self._dropped:
            self._dropped.add(query.id)
            return None
        if self.mode == "garbage":
            return wire[:2] + b"\x81\x80 not dns at all"
        response = dns.message.make_response(query)
        if query.flags & dns.flags.AD:
            self.asked_ad += 1
            if self.validated:
                response.flags |= dns.flags.AD
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        text = "something-else" if self.mode == "wrong-answer" else self.answer
        q = query.question[0]
        response.answer.append(dns.rrset.from_text(q.name, 0, "IN", q.rdtype, f'"{text}"'))
        if self.mode == "wrong-id":
            response.id = (query.id + 1) % 65536
        return response.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.responder.respond(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def serve(responder: Responder) -> AsyncIterator[Responder]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    responder.port = sock.getsockname()[1]
    transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(responder), sock=sock)

    stop = asyncio.Event()
    handlers: set[asyncio.Task[None]] = set()

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            out = responder.respond(await reader.readexactly(length))
            if out is not None:
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
            else:
                await stop.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(tcp, "127.0.0.1", responder.port)
    try:
        yield responder
    finally:
        stop.set()
        transport.close()
        server.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
