"""FRR's static routes, for `anycastd router`: a kept-open VTY session (the default), or vtysh per call.

Theory of operation
-------------------
Every call goes to staticd alone: when staticd is not running, the call
then fails instead of returning a configuration without any static route,
which would read as "anycastd owns nothing" and be wrong. What zebra
installed in the kernel is asked of zebra.

``VtyRoutes`` keeps one connection open to each daemon's VTY socket, the
one vtysh itself uses (``DIR/staticd.vty``): a command is its text and a
NUL byte; the daemon answers with its output, three NUL bytes and the
command's return code. A change then costs about 1 ms instead of the
43 ms of starting vtysh (docs/benchmarks.md). A connection that breaks
(the daemon restarted) or does not answer within ``vtysh_timeout`` is
closed, the call fails, and the next call connects again: the router's
retries and its periodic resync do the rest, and while FRR cannot be
reached the routes stay as they are (fail static).

``VtyshRoutes`` runs ``vtysh -d staticd`` for each call instead
(``router.frr_session: vtysh``), for a router where only a wrapper may
reach FRR.

Either way a change is ``configure terminal``, every ``ip route`` and
``no ip route`` line, ``end``; it stops at the first line FRR refuses, and
FRR's words (the ``%`` lines) become the error. The caller reads the routes
back afterwards and compares: this adapter only says what FRR said, it
never decides whether the result is right.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from anycastd.config.router import VtyshSettings
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.core.routes import Change, Installed, StaticRoute
from anycastd.core.syntax import vtysh_command
from anycastd.errors import AnnounceError
from anycastd.watch.fib import Hops

log = logging.getLogger(__name__)

#: FRR says this, and exits 0, when asked to remove a route it does not have: the removal is done already.
_ALREADY_GONE = "Refusing to remove a non-existent route"
#: vtysh says this of its own vtysh.conf when it has none (with -N NAME: /etc/frr/NAME/vtysh.conf): no refusal.
_NO_VTYSH_CONF = "Can't open configuration file"


# FRR's dialect: the only place anycastd writes or reads a static route as text ------------------------


def route_command(route: StaticRoute, tag: int) -> str:
    family = "ip" if route.prefix.version == 4 else "ipv6"
    return vtysh_command(family, "route", route.prefix, route.nexthop, "tag", tag)


def no_route_command(route: StaticRoute, tag: int) -> str:
    return "no " + route_command(route, tag)


def commands_for(change: Change, tag: int) -> list[str]:
    """Removals first: a server leaving is the urgent half of a change."""
    return [no_route_command(r, tag) for r in change.remove] + [route_command(r, tag) for r in change.add]


def parse_running_config(text: str) -> list[Installed]:
    """The default VRF's static routes with a gateway address, from `show running-config` of staticd.

    Lines inside a ``vrf`` block are indented and skipped; routes to an interface or
    a blackhole have no gateway address and are never anycastd's, so they are skipped too.
    """
    found = []
    for line in text.splitlines():
        words = line.split()
        if line[:1].isspace() or len(words) < 4 or words[0] not in ("ip", "ipv6") or words[1] != "route":
            continue
        try:
            prefix = ipaddress.ip_network(words[2])
            nexthop = ipaddress.ip_address(words[3])
        except ValueError:
            continue
        tag = None
        if "tag" in words[4:]:
            at = words.index("tag", 4)
            tag = int(words[at + 1]) if at + 1 < len(words) and words[at + 1].isdigit() else None
        found.append(Installed(StaticRoute(prefix, nexthop), tag))
    return found


class RouteError(AnnounceError):
    """FRR could not be read or refused a change to its static routes."""


class StaticRoutes(Protocol):
    async def read(self) -> list[Installed]:
        """The static routes staticd holds now."""
        ...

    async def apply(self, change: Change, tag: int) -> None:
        """Carry ``change`` out in one go, removals first; raise RouteError with FRR's words if it refuses."""
        ...

    async def zebra_fib(self, prefixes: Sequence[IPNetwork]) -> Hops:
        """The nexthops zebra says it installed in the kernel for each prefix."""
        ...

    def describe(self) -> dict[str, Any]:
        """The backend's own state for `anycastctl status`."""
        ...


class VtyshRoutes:
    def __init__(self, settings: VtyshSettings) -> None:
        self.settings = settings
        self.calls = 0
        self.last_error: str | None = None
        self.last_duration: float | None = None

    async def _run(self, args: Sequence[str], daemon: str | None = "staticd") -> str:
        argv = [*self.settings.command, *(("-d", daemon) if daemon else ()), *args]
        started = time.monotonic()
        self.calls += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise RouteError(f"cannot run {argv[0]}: {exc.strerror or exc} (set router.vtysh)") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.settings.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RouteError(f"vtysh gave no answer within {self.settings.timeout:g} s (is FRR stuck?)") from None
        finally:
            self.last_duration = time.monotonic() - started
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            said = _said(text) or f"exit status {proc.returncode}"
            if "failed to connect" in text:
                raise RouteError(f"staticd is not running, or its vty socket is out of reach (vtysh: {said})")
            raise RouteError(f"vtysh failed: {said}")
        return text

    async def read(self) -> list[Installed]:
        try:
            return parse_running_config(await self._run(["-c", "show running-config"]))
        except RouteError as exc:
            self.last_error = str(exc)
            raise

    async def apply(self, change: Change, tag: int) -> None:
        args = ["-c", "configure terminal"]
        for line in commands_for(change, tag):
            args += ["-c", line]
        args += ["-c", "end"]
        try:
            text = await self._run(args)
            refused = [
                line
                for line in text.splitlines()
                if line.startswith("%") and _ALREADY_GONE not in line and _NO_VTYSH_CONF not in line
            ]
            if refused:
                raise RouteError("FRR refused: " + "; ".join(line.lstrip("% ") for line in refused))
        except RouteError as exc:
            self.last_error = str(exc)
            raise
        self.last_error = None

    async def zebra_fib(self, prefixes: Sequence[IPNetwork]) -> Hops:
        args = ["-d", "zebra"]  # zebra, not staticd: it is zebra that installs routes in the kernel
        for prefix in prefixes:
            args += ["-c", f"show {'ip' if prefix.version == 4 else 'ipv6'} route {prefix} json"]
        try:
            return parse_zebra_routes(await self._run(args, daemon=None), prefixes)
        except RouteError as exc:
            self.last_error = str(exc)
            raise

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vtysh",
            "command": list(self.settings.command),
            "calls": self.calls,
            "last_call_ms": round(self.last_duration * 1000, 1) if self.last_duration is not None else None,
            "last_error": self.last_error,
        }


#: The daemon's answer to a command ends with these three bytes and the command's return code.
_END = b"\0\0\0"
#: lib/command.h: CMD_SUCCESS, and CMD_WARNING (which "no ip route" of a route not there returns).
_CMD_SUCCESS, _CMD_WARNING = 0, 1
#: The most a daemon may say in answer to one command (a router with very many static routes).
_MAX_ANSWER = 16 << 20


class Vty:
    """One kept-open connection to one daemon's VTY socket, in enable mode."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def _connect(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=_MAX_ANSWER), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
            raise RouteError(f"{self.path.stem} is not running, or {self.path} is out of reach ({why})") from None
        self.connects += 1
        code, said = await self._exchange("enable")
        if code != _CMD_SUCCESS:
            self.close()
            raise RouteError(f"{self.path.stem} refused enable: {said or code}")

    async def command(self, line: str) -> tuple[int, str]:
        """Run one command; (return code, output). Raises RouteError, closing the session, if it breaks."""
        if self.writer is None:
            await self._connect()
        return await self._exchange(line)

    async def _exchange(self, line: str) -> tuple[int, str]:
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(line.encode() + b"\0")
            answer = await asyncio.wait_for(self._answer(self.reader), self.timeout)
        except TimeoutError:
            self.close()
            raise RouteError(f"{self.path.stem} gave no answer within {self.timeout:g} s (is FRR stuck?)") from None
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise RouteError(f"the session to {self.path.stem} broke ({exc or type(exc).__name__})") from None
        return answer

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, str]:
        text = await reader.readuntil(_END)
        code = (await reader.readexactly(1))[0]
        return code, text[: -len(_END)].decode(errors="replace")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class VtyRoutes:
    """staticd and zebra through kept-open sessions on their VTY sockets (see the module's docstring)."""

    def __init__(self, settings: VtyshSettings) -> None:
        self.settings = settings
        self.staticd = Vty(settings.vty_dir / "staticd.vty", settings.timeout)
        self.zebra = Vty(settings.vty_dir / "zebra.vty", settings.timeout)
        self.calls = 0
        self.last_error: str | None = None
        self.last_duration: float | None = None
        self._lock = asyncio.Lock()

    async def _run(self, vty: Vty, lines: Sequence[str], stop_on_refusal: bool) -> list[str]:
        """Run ``lines`` in one session; their outputs. A refused line ends a change (after ``end``)."""
        async with self._lock:
            started = time.monotonic()
            self.calls += 1
            try:
                outputs = []
                for line in lines:
                    code, said = await vty.command(line)
                    refused = code not in (_CMD_SUCCESS, _CMD_WARNING) or (
                        code == _CMD_WARNING and _ALREADY_GONE not in said
                    )
                    if refused and stop_on_refusal:
                        with contextlib.suppress(RouteError):
                            await vty.command("end")
                        words = _said(said) or f"return code {code}"
                        raise RouteError("FRR refused: " + words.lstrip("% "))
                    if code != _CMD_SUCCESS and not stop_on_refusal:
                        raise RouteError(f"{vty.path.stem} failed: {_said(said) or f'return code {code}'}")
                    outputs.append(said)
                return outputs
            except RouteError as exc:
                self.last_error = str(exc)
                raise
            finally:
                self.last_duration = time.monotonic() - started

    async def read(self) -> list[Installed]:
        (text,) = await self._run(self.staticd, ["show running-config"], stop_on_refusal=False)
        return parse_running_config(text)

    async def apply(self, change: Change, tag: int) -> None:
        await self._run(self.staticd, ["configure terminal", *commands_for(change, tag), "end"], True)
        self.last_error = None

    async def zebra_fib(self, prefixes: Sequence[IPNetwork]) -> Hops:
        lines = [f"show {'ip' if p.version == 4 else 'ipv6'} route {p} json" for p in prefixes]
        return parse_zebra_routes("\n".join(await self._run(self.zebra, lines, stop_on_refusal=False)), prefixes)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vty",
            "sockets": [str(self.staticd.path), str(self.zebra.path)],
            "calls": self.calls,
            "connects": self.staticd.connects + self.zebra.connects,
            "last_call_ms": round(self.last_duration * 1000, 1) if self.last_duration is not None else None,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        self.staticd.close()
        self.zebra.close()


def parse_zebra_routes(text: str, prefixes: Sequence[IPNetwork]) -> Hops:
    """What zebra claims is in the kernel, from the JSON of `show ip route PREFIX json` (one object per prefix).

    Only the selected route counts, and of it only the nexthops zebra marks ``fib``: installed.
    """
    out: Hops = {p: frozenset() for p in prefixes}
    decoder = json.JSONDecoder()
    at = 0
    text = text.strip()
    while at < len(text):
        try:
            obj, end = decoder.raw_decode(text, at)
        except ValueError:
            raise RouteError(f"zebra's route JSON could not be read near: {text[at : at + 80]!r}") from None
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
        if not isinstance(obj, dict):
            continue
        for key, entries in obj.items():
            try:
                prefix = ipaddress.ip_network(key)
            except ValueError:
                continue
            if prefix not in out or not isinstance(entries, list):
                continue
            hops: set[IPAddress] = set()
            for entry in entries:
                if isinstance(entry, dict) and entry.get("selected") and entry.get("installed"):
                    for hop in entry.get("nexthops", []):
                        if isinstance(hop, dict) and hop.get("fib") and hop.get("ip"):
                            hops.add(ipaddress.ip_address(hop["ip"]))
            out[prefix] = frozenset(hops)
    return out


def _said(text: str) -> str:
    """What FRR said, in one line, without vtysh's banners."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-5:])


class InMemoryRoutes:
    """For tests: staticd as a list, with the failures a real one has."""

    def __init__(self, installed: Sequence[Installed] = ()) -> None:
        self.installed = list(installed)
        self.applied: list[list[str]] = []
        self.reads = 0
        self.broken: str | None = None  # every call fails with this
        self.refuse_after: int | None = None  # apply this many lines, then refuse (vtysh stops there)
        self.ignore = False  # accept changes but keep nothing (FRR lost them)

    async def read(self) -> list[Installed]:
        self.reads += 1
        if self.broken:
            raise RouteError(self.broken)
        return list(self.installed)

    async def apply(self, change: Change, tag: int) -> None:
        if self.broken:
            raise RouteError(self.broken)
        commands = commands_for(change, tag)
        self.applied.append(commands)
        for i, line in enumerate(commands):
            if self.refuse_after is not None and i >= self.refuse_after:
                raise RouteError(f"FRR refused: Unknown command: {line}")
            if self.ignore:
                continue
            self._one(line)

    def _one(self, line: str) -> None:
        words = line.split()
        remove = words[0] == "no"
        words = words[1:] if remove else words
        route = parse_running_config(" ".join(words))[0]
        self.installed = [i for i in self.installed if i.route != route.route]
        if not remove:
            self.installed.append(route)

    async def zebra_fib(self, prefixes: Sequence[IPNetwork]) -> Hops:
        if self.broken:
            raise RouteError(self.broken)
        return {p: frozenset(i.route.nexthop for i in self.installed if i.route.prefix == p) for p in prefixes}

    def routes(self, tag: int | None = None) -> set[StaticRoute]:
        return {i.route for i in self.installed if tag is None or i.tag == tag}

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory", "calls": len(self.applied) + self.reads, "last_error": self.broken}
