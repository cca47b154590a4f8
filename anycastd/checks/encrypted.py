"""DNS over TLS (RFC 7858) and over HTTPS (RFC 8484) probes, through dnspython's own DoT and DoH.

Theory of operation
-------------------
A TLS handshake costs far more than a query, so a connection is kept and reused by the probes of one
address for ``reuse`` seconds (0: a new one per probe). Reuse must not hide a dead listener:

- a resolver that dies closes its connections with it: the query on the kept connection meets its end
  (EOF or a reset), and is asked again once on a *new* connection, which a dead listener refuses (a hard
  failure, as over UDP) and a live one answers (the server closed an idle connection: no failure);
- any failure drops the connection: the next probe starts from the handshake;
- a listener that closed while an accepted connection lives on (a reconfigured resolver) is found at the
  latest when the connection's ``reuse`` runs out.

The whole probe, handshake included, is bounded by the check's timeout. DoT queries on one connection are
asked one at a time (a lock): a stream carries one exchange at a time here. DoH goes through an HTTP/2
client (httpx, as dnspython uses), which reconnects by itself when the server has closed the connection.
"""

from __future__ import annotations

import asyncio
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

#: What ends a query on a kept connection that the server had closed: asked again on a new one.
_CLOSED = (EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)


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
        what = type(exc).__name__ if isinstance(exc, EOFError) else (exc.strerror or str(exc))
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
    """One kept connection (a DoT stream, or a DoH client) and when it was made."""

    made: float
    connection: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    used: int = 0


class EncryptedProber:
    """DoT and DoH probes of a check's addresses, with kept connections (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._kept: dict[Key, _Kept] = {}
        self._contexts: dict[tuple[TlsSettings, str], ssl.SSLContext] = {}
        self.connections_made = 0  # for tests and benchmarks: how often a handshake was paid

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
                for attempt in range(2):
                    kept, fresh = await self._connection(check, key, address)
                    try:
                        async with kept.lock:
                            kept.used += 1
                            response = await self._ask(check, kept, query, address)
                    except _CLOSED:
                        self._drop(key, kept)
                        if fresh or attempt:
                            raise
                        continue  # the server closed the kept connection: once more, on a new one
                    except BaseException:
                        self._drop(key, kept)
                        raise
                    break
        except FAILURES as exc:
            return failure(exc, target, check.timeout)
        return classify(check, query, response.to_wire(), target, time.monotonic() - started)

    async def _connection(self, check: Check, key: Key, address: IPAddress) -> tuple[_Kept, bool]:
        kept = self._kept.get(key)
        if kept is not None and (check.reuse == 0 or self.clock() - kept.made >= check.reuse):
            self._drop(key, kept)
            kept = None
        if kept is not None:
            return kept, False
        if check.transport == "dot":
            backend: Any = dns.asyncbackend.get_backend("asyncio")
            connection: Any = await backend.make_socket(
                dns.inet.af_for_address(str(address)),
                socket.SOCK_STREAM,
                0,
                None,
                (str(address), check.port),
                check.timeout,
                self._context(check),
                check.tls.server_name or str(address),
            )
        else:
            context = self._context(check)
            transport: httpx2.AsyncBaseTransport = httpx2.AsyncHTTPTransport(http1=True, http2=True, verify=context)
            if check.tls.server_name is not None:
                transport = _ServerName(transport, check.tls.server_name)
            connection = httpx2.AsyncClient(transport=transport)
        self.connections_made += 1
        kept = self._kept[key] = _Kept(self.clock(), connection)
        return kept, True

    @staticmethod
    async def _ask(check: Check, kept: _Kept, query: dns.message.Message, address: IPAddress) -> dns.message.Message:
        if isinstance(kept.connection, httpx2.AsyncClient):
            return await dns.asyncquery.https(
                query, str(address), check.timeout, check.port, client=kept.connection, path=check.path
            )
        return await dns.asyncquery.tls(query, str(address), check.timeout, check.port, sock=kept.connection)

    def _drop(self, key: Key, kept: _Kept) -> None:
        if self._kept.get(key) is kept:
            del self._kept[key]
        _close(kept)

    def close(self) -> None:
        for kept in self._kept.values():
            _close(kept)
        self._kept.clear()


def _close(kept: _Kept) -> None:
    """Close a kept connection without waiting: its socket goes now, whatever the peer does."""
    connection = kept.connection
    if isinstance(connection, httpx2.AsyncClient):
        try:
            task = asyncio.get_running_loop().create_task(connection.aclose())
        except RuntimeError:  # no loop: nothing to close the client with, and the process is ending
            return
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    else:
        connection.writer.close()


_closing: set[asyncio.Task[None]] = set()  # keeps the closing tasks referenced until they are done
