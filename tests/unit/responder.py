"""A tiny real DNS responder on 127.0.0.1 whose behaviour a test sets.

It answers over UDP and TCP on one random port. ``mode`` chooses what it
does with the next queries: answer properly, answer with another rcode or
record, send garbage, answer with the wrong id, or stay silent. Given a TLS
context, it also answers DNS over TLS (many queries per connection) and DNS
over HTTPS (HTTP/1.1 POST, as RFC 8484 allows) on two more ports. Given
``soa``, it is an authoritative server of those zones (their serials).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from anycastd_lab.encrypted import self_signed


@dataclass
class Responder:
    port: int = 0
    mode: str = "ok"  # ok | servfail | wrong-answer | garbage | wrong-id | silent | drop-first
    #: A validating resolver's answer: the AD bit set when the query asks for it (AD or DO, RFC 6840 5.7).
    validated: bool = False
    asked_ad: int = 0  # queries that set the AD bit
    answer: str = "healthy"
    queries: int = 0
    soa: dict[str, int] | None = None  # authoritative for these zones, with these serials
    tls_port: int = 0  # DNS over TLS (with a TLS context)
    doh_port: int = 0  # DNS over HTTPS
    doh_status: int = 200
    connections: int = 0  # TLS connections accepted
    _dropped: set[int] = field(default_factory=set)
    _streams: set[asyncio.StreamWriter] = field(default_factory=set)
    _listeners: list[asyncio.Server] = field(default_factory=list)

    def hang_up(self) -> None:
        """Close every open TLS connection, as a server closing idle ones does; the listeners stay."""
        for writer in list(self._streams):
            writer.close()

    def stop_listening(self) -> None:
        """Close the TLS listeners; connections already open stay (a reconfigured resolver's old ones)."""
        for server in self._listeners:
            server.close()

    def _authority(self, query: dns.message.Message) -> bytes:
        assert self.soa is not None
        response = dns.message.make_response(query)
        q = query.question[0]
        serial = self.soa.get(q.name.to_text())
        if serial is None or self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL if self.mode == "servfail" else dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        soa = f"ns.{q.name} hostmaster.{q.name} {serial} 3600 600 86400 300"
        response.answer.append(dns.rrset.from_text(q.name, 300, "IN", "SOA", soa))
        return response.to_wire()

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
        if self.soa is not None:
            return self._authority(query)
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


def make_certificate(directory: Path, name: str = "dns.test") -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for ``name`` and 127.0.0.1, made with openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    if not cert.exists():
        self_signed(cert, key, name, ["IP:127.0.0.1"])
    return cert, key


def server_context(cert: Path, key: Path, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(alpn)
    return context


async def _dot(responder: Responder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """DNS over TLS: queries one after another on the connection, until the client or hang_up closes it."""
    responder.connections += 1
    responder._streams.add(writer)
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            out = responder.respond(await reader.readexactly(length))
            if out is not None:
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
    responder._streams.discard(writer)
    writer.close()


async def _doh(responder: Responder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """DNS over HTTPS over HTTP/1.1: POSTed queries, kept alive."""
    responder.connections += 1
    responder._streams.add(writer)
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            out = responder.respond(await reader.readexactly(length))
            if out is None:  # silent: the request is never answered
                await asyncio.Event().wait()
                continue
            head = f"HTTP/1.1 {responder.doh_status} X\r\ncontent-type: application/dns-message\r\n"
            writer.write(f"{head}content-length: {len(out)}\r\n\r\n".encode() + out)
            await writer.drain()
    responder._streams.discard(writer)
    writer.close()


def _udp_and_tcp() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on the same free port of 127.0.0.1. The TCP one is bound first and the
    UDP one tried on its port: a free UDP port's TCP twin may be a client's ephemeral port (it once was)."""
    for _ in range(50):
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", listening.getsockname()[1]))
        except OSError:
            sock.close()
            listening.close()
            continue
        return sock, listening
    raise OSError("no port of 127.0.0.1 is free for both UDP and TCP")


@contextlib.asynccontextmanager
async def serve(responder: Responder, certificate: tuple[Path, Path] | None = None) -> AsyncIterator[Responder]:
    loop = asyncio.get_running_loop()
    sock, listening = _udp_and_tcp()
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

    server = await asyncio.start_server(tcp, sock=listening)
    if certificate is not None:
        for handler, alpn, attribute in ((_dot, ["dot"], "tls_port"), (_doh, ["http/1.1"], "doh_port")):
            context = server_context(*certificate, alpn)
            listener = await asyncio.start_server(functools.partial(handler, responder), "127.0.0.1", 0, ssl=context)
            setattr(responder, attribute, listener.sockets[0].getsockname()[1])
            responder._listeners.append(listener)
    try:
        yield responder
    finally:
        stop.set()
        transport.close()
        server.close()
        responder.hang_up()
        responder.stop_listening()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
