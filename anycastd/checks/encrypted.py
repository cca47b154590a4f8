"""DNS over TLS (RFC 7858) and over HTTPS (RFC 8484) probes, through dnspython's own DoT and DoH.

Theory of operation
-------------------
A TLS handshake costs far more than a query, so a connection is kept and reused by the probes of one
address for ``reuse`` seconds (0: a new one per probe). A spare is kept beside it, made in the background
(and made again once the youngest is half its ``reuse`` old): a new connection is then never made on a
probe's path but after a failure, so a handshake slowed by a lost packet (TCP sends a lost SYN again after
a second) fails no probe, and a probe that failed is followed by one on a connection already made.
Reuse must not hide a dead listener:

- a resolver that dies closes its connections with it: the query on the kept connection meets its end
  (EOF or a reset), every kept connection of the address is dropped, and the query is asked again once on
  a *new* connection, which a dead listener refuses (a hard failure, as over UDP) and a live one answers
  (the server closed an idle connection: no failure);
- any other failure drops the connection it happened on: the next probe takes the spare;
- a listener that closed while an accepted connection lives on (a reconfigured resolver) is found at the
  latest when the connection's ``reuse`` runs out: no spare can be made, and a connection past its
  ``reuse`` is never used.

The whole probe, handshake included, is bounded by the check's timeout. DoT queries on one connection are
asked one at a time (a lock): a stream carries one exchange at a time here. DoH goes through an HTTP/2
client (httpx, as dnspython uses), which reconnects by itself when the server has closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import httpx2

from anycastd.checks.dns import ProbeResult, classify, os_failure, timed_out
from anycastd.config.checks import Check, TlsSettings
from anycastd.core.health import Outcome
from anycastd.core.net import IPAddress

#: A kept connection's: the address, port, transport, TLS settings and DoH path it was made for.
Key = tuple[IPAddress, int, str, TlsSettings, str]

#: A spare connection is made in the background once the youngest kept one is this fraction of ``reuse`` old.
RENEW_AT = 0.5
#: Every pool, a removed check's too, is looked at this often for connections past their reuse.
SWEEP = 5.0
#: How long a spare's handshake may take: a lost SYN alone is sent again only after a second.
WARM_TIMEOUT = 3.0

#: What ends a query on a kept connection that the server had closed: asked again on a new one.
_CLOSED = (
    EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,  # a DoT stream's
    httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError,  # an HTTP client's (a reset, a closed stream)
)  # fmt: skip


def ssl_context(tls: TlsSettings, alpn: list[str]) -> ssl.SSLContext:
    """The client context a DoT or DoH probe uses: the system's CAs or ``ca_file``, or no verification."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    return context


def failure(exc: BaseException, target: str, timeout: float) -> ProbeResult:
    """What a DoT or DoH query's exception (one of FAILURES) says of the server, as a probe's result."""
    if isinstance(exc, TimeoutError):
        return timed_out(target, timeout)
    if isinstance(exc, ssl.SSLError):
        return tls_failure(exc, target)
    if isinstance(exc, _CLOSED):
        what = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
        result = ProbeResult(Outcome.FAIL, f"{target}: the connection closed ({what})", None, target, "network")
    elif isinstance(exc, OSError):
        result = os_failure(exc, target)
    elif isinstance(exc, httpx2.ConnectError):
        result = connect_failure(exc, target)
    elif isinstance(exc, httpx2.HTTPError | ValueError):  # dnspython: ValueError for an HTTP status not 2xx
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        result = ProbeResult(Outcome.FAIL, f"{target}: DoH failed: {reason}", None, target, "http")
    else:
        result = ProbeResult(Outcome.FAIL, f"{target}: malformed response ({exc})", None, target, "malformed")
    return result


#: The exceptions a DoT or DoH query raises for a failing server (``failure`` explains each).
FAILURES = (TimeoutError, ssl.SSLError, OSError, EOFError, httpx2.HTTPError, ValueError, dns.exception.DNSException)


def connect_failure(exc: httpx2.ConnectError, target: str) -> ProbeResult:
    """httpx wraps the socket's error, in layers: the chain of causes says what happened."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 16:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return tls_failure(cause, target)
    for cause in chain:
        if isinstance(cause, OSError) and cause.errno is not None:
            return os_failure(cause, target)
    return ProbeResult(Outcome.FAIL, f"{target}: cannot connect ({exc})", None, target, "network")


class _ServerName(httpx2.AsyncBaseTransport):
    """Sends ``server_name`` as SNI, and has the certificate checked against it, while the URL (and the
    connection) stay on the address: no name is ever looked up."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, server_name: str) -> None:
        self.inner, self.server_name = inner, server_name

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.extensions["sni_hostname"] = self.server_name
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def tls_failure(exc: ssl.SSLError, target: str) -> ProbeResult:
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = f"the certificate was not accepted ({exc.verify_message or exc.reason})"
    else:
        what = f"TLS failed ({exc.reason or exc})"
    return ProbeResult(Outcome.FAIL, f"{target}: {what}", None, target, "tls")


@dataclass
class _Kept:
    """One kept connection (a DoT stream, or a DoH client), when it was made, and when it may no longer be used."""

    made: float
    expires: float
    connection: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    used: int = 0


class EncryptedProber:
    """DoT and DoH probes of a check's addresses, with kept connections (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pools: dict[Key, list[_Kept]] = {}  # oldest first
        self._warming: dict[Key, asyncio.Task[None]] = {}
        self._swept = clock()
        self._contexts: dict[tuple[TlsSettings, str], ssl.SSLContext] = {}
        self.connections_made = 0  # for tests and benchmarks: how often a handshake was paid

    @property
    def kept(self) -> int:
        """How many connections are kept now (spares included)."""
        return sum(len(pool) for pool in self._pools.values())

    def _context(self, check: Check) -> ssl.SSLContext:
        key = (check.tls, check.transport)
        context = self._contexts.get(key)
        if context is None:
            alpn = ["dot"] if check.transport == "dot" else ["h2", "http/1.1"]
            context = self._contexts[key] = ssl_context(check.tls, alpn)
        return context

    async def query(self, check: Check, query: dns.message.Message, address: IPAddress) -> ProbeResult:
        """One query of ``check`` to ``address``, judged; never raises for a failing server."""
        target = str(address)
        started = time.monotonic()
        key: Key = (address, check.port, check.transport, check.tls, check.path)
        try:
            async with asyncio.timeout(check.timeout):
                response = await self._query(check, key, query, address)
        except FAILURES as exc:
            return failure(exc, target, check.timeout)
        return classify(check, query, response.to_wire(), target, time.monotonic() - started)

    async def _query(self, check: Check, key: Key, query: dns.message.Message, address: IPAddress) -> Any:
        if check.reuse == 0:  # a connection of its own, closed after it
            kept = self._made(check, await self._open(check, address))
            try:
                return await self._ask(check, kept, query, address)
            finally:
                _close(kept)
        pooled = self._kept(check, key, address, query)
        if pooled is not None:
            try:
                async with pooled.lock:
                    pooled.used += 1
                    return await self._ask(check, pooled, query, address)
            except _CLOSED:  # the server closed it, and likely every other it kept: asked again on a new one
                for other in list(self._pools.get(key, ())):
                    self._drop(key, other)
            except BaseException:
                self._drop(key, pooled)
                raise
        kept = self._made(check, await self._open(check, address))
        self._pools.setdefault(key, []).append(kept)
        try:
            async with kept.lock:
                kept.used += 1
                return await self._ask(check, kept, query, address)
        except BaseException:
            self._drop(key, kept)
            raise

    def _kept(self, check: Check, key: Key, address: IPAddress, query: dns.message.Message) -> _Kept | None:
        """The oldest kept connection still within ``reuse``; a spare is made in the background when fewer
        than two are kept, or the youngest is past RENEW_AT of its reuse."""
        now = self.clock()
        if now - self._swept >= SWEEP:  # a check removed by a reload asks no more: its pool is swept here
            self._swept = now
            for other, kept_there in [(k, c) for k, pool in self._pools.items() for c in pool if c.expires <= now]:
                self._drop(other, kept_there)
        pool = self._pools.setdefault(key, [])
        for old in [k for k in pool if k.expires <= now]:
            self._drop(key, old)
        young = pool and now - pool[-1].made < check.reuse * RENEW_AT
        if key not in self._warming and (len(pool) < 2 or not young):
            task = asyncio.get_running_loop().create_task(self._warm(check, key, address, query))
            self._warming[key] = task
            task.add_done_callback(lambda _: self._warming.pop(key, None))
        return pool[0] if pool else None

    async def _warm(self, check: Check, key: Key, address: IPAddress, query: dns.message.Message) -> None:
        """A spare connection, made off the probes' path: a handshake slowed by a lost packet fails no probe."""
        kept = None
        try:
            async with asyncio.timeout(WARM_TIMEOUT):
                kept = self._made(check, await self._open(check, address))
                if isinstance(kept.connection, httpx2.AsyncClient):
                    await self._ask(check, kept, query, address)  # an HTTP client connects on its first request
        except FAILURES:
            if kept is not None:
                _close(kept)
            return  # the probes connect themselves, and see why
        self._pools.setdefault(key, []).append(kept)

    def _made(self, check: Check, connection: Any) -> _Kept:
        now = self.clock()
        return _Kept(now, now + check.reuse, connection)

    async def _open(self, check: Check, address: IPAddress) -> Any:
        self.connections_made += 1
        if check.transport == "dot":
            backend: Any = dns.asyncbackend.get_backend("asyncio")
            return await backend.make_socket(
                dns.inet.af_for_address(str(address)),
                socket.SOCK_STREAM,
                0,
                None,
                (str(address), check.port),
                check.timeout,
                self._context(check),
                check.tls.server_name or str(address),
            )
        context = self._context(check)
        transport: httpx2.AsyncBaseTransport = httpx2.AsyncHTTPTransport(http1=True, http2=True, verify=context)
        if check.tls.server_name is not None:
            transport = _ServerName(transport, check.tls.server_name)
        return httpx2.AsyncClient(transport=transport)

    @staticmethod
    async def _ask(check: Check, kept: _Kept, query: dns.message.Message, address: IPAddress) -> dns.message.Message:
        if isinstance(kept.connection, httpx2.AsyncClient):
            return await dns.asyncquery.https(
                query, str(address), check.timeout, check.port, client=kept.connection, path=check.path
            )
        return await dns.asyncquery.tls(query, str(address), check.timeout, check.port, sock=kept.connection)

    def _drop(self, key: Key, kept: _Kept) -> None:
        pool = self._pools.get(key, [])
        if kept in pool:
            pool.remove(kept)
        _close(kept)

    async def aclose(self) -> None:
        """Close every kept connection and end the spares being made, and wait until their sockets are closed."""
        warming = list(self._warming.values())
        for task in warming:
            task.cancel()
        await asyncio.gather(*warming, return_exceptions=True)
        for pool in self._pools.values():
            for kept in pool:
                _close(kept)
        self._pools.clear()
        await settle()


def _close(kept: _Kept) -> None:
    """Close a kept connection without waiting: its socket goes now, whatever the peer does."""
    task = asyncio.get_running_loop().create_task(_aclose(kept))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _aclose(kept: _Kept) -> None:
    connection = kept.connection
    with contextlib.suppress(Exception):
        if isinstance(connection, httpx2.AsyncClient):
            await connection.aclose()
        else:
            await connection.close()  # dnspython's stream: closes the writer and waits for it


_closing: set[asyncio.Task[None]] = set()  # keeps the closing tasks referenced until they are done


async def settle() -> None:
    """Wait for the connections being closed (at the daemon's end: every socket closed before the loop)."""
    while _closing:
        await asyncio.gather(*list(_closing), return_exceptions=True)
