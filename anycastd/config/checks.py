"""A check of either configuration: what it asks, of whom, how often, and how it is judged.

Theory of operation
-------------------
A check has a ``kind``. ``dns`` (the default) asks one question of the resolver over UDP, TCP, DoT or DoH
(``transport``; ``protocol`` is its older name) and judges the rcode, the answer and, with ``dnssec``, the AD
bit. ``zone`` asks the local server for the SOA of each of its ``zones`` and, given a ``primary``, compares
the serials (RFC 1982): a zone not loaded, or behind the primary for longer than ``max_lag``, fails.
``command`` runs the operator's own program (an argv list, never a shell) and passes on exit 0.

Every kind shares the schedule and the thresholds (interval, timeout, rise, fall, fall_hard); the keys of one
kind are refused on another, with the kind that takes them named, so a typo cannot pass as a setting. What a
check needs from the host (its ``ca_file``, its program) is looked at here: nothing passes ``check-config``
that a probe could not run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anycastd.config.schema import (
    one_of,
    to_address,
    to_bool,
    to_command,
    to_path,
    to_qname,
    to_qtype,
    to_rcode,
    to_str,
)
from anycastd.config.yamlfile import Reader, kind, milliseconds, seconds, shown, whole
from anycastd.core.degradation import ExitRule, LatencyRule
from anycastd.core.net import IPAddress

#: The router's checks are templates: each server's admin address is filled in (see RoutedService.checks_for).
TEMPLATE_ADDRESS = ipaddress.ip_address("0.0.0.0")  # noqa: S104 (a placeholder, never bound or queried)

KINDS = ("dns", "zone", "command")
TRANSPORTS = ("udp", "tcp", "dot", "doh")
#: Each transport's port unless ``port`` says otherwise (RFC 1035, 7858, 8484).
DEFAULT_PORTS = {"udp": 53, "tcp": 53, "dot": 853, "doh": 443}
#: The PATH a command check runs with, and finds its program in: the environment is not passed on.
COMMAND_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Replaced, in every word of a command check's argv, by the check's address (the router's: each server's
#: admin address), as in ``@{address}`` for dig. An address is digits, dots, colons and hex letters: it cannot
#: change how the program reads its arguments, and nothing else is substituted.
ADDRESS_WORD = "{address}"


@dataclass(frozen=True)
class TlsSettings:
    """How a DoT or DoH probe checks the server's certificate."""

    server_name: str | None = None  # sent as SNI and matched by the certificate; None: the address itself
    ca_file: Path | None = None  # the CAs to trust; None: the system's
    verify: bool = True  # false: any certificate is accepted (the connection is still encrypted)


@dataclass(frozen=True)
class Check:
    address: IPAddress
    port: int = 53
    qname: str = "."
    qtype: str = "SOA"
    transport: str = "udp"  # udp, tcp, dot, doh
    rcode: str = "NOERROR"
    answer: str | None = None
    interval: float = 0.2
    timeout: float = 0.15
    rise: int = 3
    fall: int = 3
    fall_hard: int = 1
    probe_service_addresses: bool = True
    dnssec: bool = False  # the answer must carry the AD bit: the resolver validated it (RFC 4035, 6840)
    kind: str = "dns"  # dns, zone, command
    tls: TlsSettings = TlsSettings()  # dot and doh
    path: str = "/dns-query"  # doh: the URL's path
    reuse: float = 10.0  # dot and doh: seconds one connection serves probes before a new one is made; 0: never
    zones: tuple[str, ...] = ()  # zone: the zones the server must serve
    primary: IPAddress | None = None  # zone: the primary whose serials it must keep up with
    primary_port: int = 53
    max_lag: float = 60.0  # zone: seconds a zone may stay behind the primary
    command: tuple[str, ...] = ()  # command: the program and its arguments
    output_limit: int = 4096  # command: bytes of output read; more fails the probe
    #: When a passing check counts as slow, and the service's weight drops (anycastd.core.degradation): a latency
    #: (dns, zone) or an exit code (command)
    degraded_when: LatencyRule | ExitRule | None = None

    @property
    def encrypted(self) -> bool:
        return self.transport in ("dot", "doh")

    @property
    def datagram(self) -> bool:
        """The probe is one UDP query (the router's batched engine and the receive-queue triggers take these)."""
        return self.kind == "dns" and self.transport == "udp"

    def argv(self) -> tuple[str, ...]:
        """A command check's argv, with ``{address}`` replaced by the check's address."""
        return tuple(w.replace(ADDRESS_WORD, str(self.address)) for w in self.command)


#: Every key, and the kinds that take it.
COMMON_KEYS = {"kind", "address", "interval", "timeout", "rise", "fall", "fall_hard"}
KIND_KEYS = {
    "dns": {"port", "qname", "qtype", "transport", "protocol", "rcode", "answer", "probe_service_addresses",
            "dnssec", "tls", "path", "reuse", "degraded_when"},
    "zone": {"port", "zones", "primary", "primary_port", "max_lag", "degraded_when"},
    "command": {"command", "output_limit", "degraded_when"},
}  # fmt: skip
CHECK_KEYS = COMMON_KEYS.union(*KIND_KEYS.values())
#: Defaults that differ by kind: a zone's serial and a program are not worth asking five times a second.
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "dns": {},
    "zone": {"interval": 1.0, "timeout": 0.5},
    "command": {"interval": 1.0, "timeout": 0.5},
}
#: ... and by transport: over TLS a lost segment is sent again only after TCP's minimum retransmission
#: timeout (200 ms on Linux, doubled at each loss), so the timeout outlasts two resends (200 + 400 ms) for
#: lost packets not to fail probes (bench/checks.py: at 5 % loss, 0.4 s failed 4 % of the probes).
ENCRYPTED_DEFAULTS = {"interval": 1.0, "timeout": 0.8}
TLS_KEYS = {"server_name", "ca_file", "verify"}
#: A host name (IDNA names as their A-labels) or an address, as a certificate carries it.
SERVER_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,253}\Z")


def to_server_name(value: Any) -> str:
    """A TLS server name: a host name (or an address) as a certificate carries it."""
    name = to_str(value)
    if not SERVER_NAME.match(name):
        raise ValueError(f"must be a host name such as dns.example.net, got {shown(value)}")
    return name


def to_ca_file(value: Any) -> Path:
    """A file of PEM certificates that Python's ssl module loads, as the probe will."""
    path = to_path(value)
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError(f"no such file {str(path)!r}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot be read as PEM certificates ({exc})") from None
    return path


def to_url_path(value: Any) -> str:
    path = to_str(value)
    if not path.startswith("/") or len(path) > 200 or any(c in path for c in " ?#%\\"):
        raise ValueError(f"must be a URL path such as /dns-query, without query or spaces, got {shown(value)}")
    return path


def to_zones(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > 256:
        raise ValueError(f"must be a list of 1 to 256 zone names, got {kind(value)}")
    zones = tuple(to_qname(v) for v in value)
    twice = sorted({z for z in zones if zones.count(z) > 1})
    if twice:
        raise ValueError(f"lists {', '.join(twice)} more than once")
    return zones


def to_argv(value: Any) -> tuple[str, ...]:
    """A command check's argv: a list of 1 to 64 words, the program found as the probe will find it."""
    words = to_command(value, shape="the program, then its arguments; no shell")
    if any(len(w) > 4096 for w in words):
        raise ValueError("has an argument longer than 4096 characters")
    program = words[0]
    found = shutil.which(program, path=COMMAND_PATH)
    if found is None or not os.access(found, os.X_OK):
        where = "" if program.startswith("/") else f" in PATH ({COMMAND_PATH})"
        raise ValueError(f"no executable program {program!r}{where}")
    return words


def _tls(r: Reader, m: dict[str, Any], path: str) -> TlsSettings | None:
    if "tls" not in m:
        return TlsSettings()
    t_path = f"{path}.tls"
    t = r.mapping(m["tls"], t_path, TLS_KEYS)
    if t is None:
        return None
    return TlsSettings(  # a value read as None has its problem recorded: parsing fails before it is used
        r.field(t, t_path, "server_name", to_server_name, None),
        r.field(t, t_path, "ca_file", to_ca_file, None),
        bool(r.field(t, t_path, "verify", to_bool, True)),
    )


def _kind_of(data: Any) -> str:
    """The kind a check says it is; ``dns`` also for one that is not a mapping, or names no known kind
    (refused with its problem; the rest of it is read as a DNS check's)."""
    if isinstance(data, dict) and data.get("kind") in KINDS:
        return str(data["kind"])
    return "dns"


def read_check(r: Reader, data: Any, path: str, template: bool = False) -> Check | None:
    """One check; ``template``: a router's, whose address is each server's (never given)."""
    check_kind = _kind_of(data)
    never = {"address", "probe_service_addresses"} if template else set()
    allowed = (COMMON_KEYS | KIND_KEYS[check_kind]) - never
    if isinstance(data, dict):  # a key of another kind is named as such; a key of no kind is unknown
        others = sorted(set(data) & CHECK_KEYS - allowed - never)
        for key in others:
            takes = " or ".join(k for k in KINDS if key in KIND_KEYS[k])
            r.problem(f"{path}.{key}", f"is a key of kind: {takes} checks, not of kind: {check_kind}")
        data = {k: v for k, v in data.items() if k not in others}
    m = r.mapping(data, path, allowed)
    if m is None or ("kind" in m and r.field(m, path, "kind", one_of(*KINDS)) is None):
        return None
    d = Check.__dataclass_fields__
    encrypted = check_kind == "dns" and m.get("transport", m.get("protocol")) in ("dot", "doh")
    defaults = ENCRYPTED_DEFAULTS if encrypted else KIND_DEFAULTS[check_kind]
    values: dict[str, Any] = {
        "kind": check_kind,
        "address": TEMPLATE_ADDRESS if template else _address(r, m, path, check_kind),
        "interval": r.field(m, path, "interval", seconds(0, 3600), defaults.get("interval", d["interval"].default)),
        "timeout": r.field(m, path, "timeout", seconds(0, 60), defaults.get("timeout", d["timeout"].default)),
        "rise": r.field(m, path, "rise", whole(1, 1000), d["rise"].default),
        "fall": r.field(m, path, "fall", whole(1, 1000), d["fall"].default),
        "fall_hard": r.field(m, path, "fall_hard", whole(1, 1000), d["fall_hard"].default),
        "probe_service_addresses": False,
    }
    if check_kind == "dns":
        values.update(_dns(r, m, path, template))
    elif check_kind == "zone":
        values.update(_zone(r, m, path))
    else:
        values["command"] = r.field(m, path, "command", to_argv)
        values["output_limit"] = r.field(m, path, "output_limit", whole(1, 1 << 20), d["output_limit"].default)
    if "degraded_when" in m:
        where = f"{path}.degraded_when"
        if check_kind == "command":
            values["degraded_when"] = _degraded_exit(r, m["degraded_when"], where)
        else:
            values["degraded_when"] = _degraded_when(r, m["degraded_when"], where, values["timeout"])
    interval, timeout = values["interval"], values["timeout"]
    if interval is not None and timeout is not None and timeout >= interval:
        r.problem(f"{path}.timeout", f"must be smaller than the interval ({interval:g} s), got {timeout:g}")
        return None
    if any(v is None for k, v in values.items() if k not in ("answer", "primary")):  # pragma: no mutate
        return None
    return Check(**values)


#: The most probes a degraded_when window may hold.
MAX_WINDOW = 100


def _degraded_when(r: Reader, data: Any, path: str, timeout: float | None) -> LatencyRule | None:
    """A check's ``degraded_when``: {latency_ms, recover_ms (default 80 % of it), window (probes, default 5)}."""
    m = r.mapping(data, path, {"latency_ms", "recover_ms", "window"})
    if m is None:
        return None
    latency = r.field(m, path, "latency_ms", milliseconds)
    recover = r.field(m, path, "recover_ms", milliseconds, None)
    window = r.field(m, path, "window", whole(1, MAX_WINDOW), LatencyRule.window)
    if latency is None or window is None or ("recover_ms" in m and recover is None):  # pragma: no mutate
        return None
    if timeout is not None and latency >= timeout * 1000:
        r.problem(
            f"{path}.latency_ms",
            f"must be below the check's timeout ({timeout * 1000:g} ms), got {latency:g}: a probe that slow fails",
        )
        return None
    if recover is None:
        recover = latency * 0.8
    elif recover >= latency:
        r.problem(
            f"{path}.recover_ms",
            f"must be below latency_ms ({latency:g}), got {recover:g}: the gap is what keeps an edge case steady",
        )
        return None
    return LatencyRule(latency, recover, window)


def _degraded_exit(r: Reader, data: Any, path: str) -> ExitRule | None:
    """A command check's ``degraded_when``: {exit_codes: the codes that mean "struggling", window (default 3)}."""
    m = r.mapping(data, path, {"exit_codes", "window"})
    if m is None:
        return None
    codes = r.field(m, path, "exit_codes", exit_codes)
    window = r.field(m, path, "window", whole(1, MAX_WINDOW), ExitRule.window)
    if codes is None or window is None:  # pragma: no mutate
        return None
    return ExitRule(codes, window)


def exit_codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of 1 to 16 exit codes, got {kind(value)}")
    if not 1 <= len(value) <= 16:
        raise ValueError(f"must list 1 to 16 exit codes, got {len(value)}")
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 255 for v in value):
        raise ValueError(f"each must be an exit code from 1 to 255 (0 is healthy), got {shown(value)}")
    return tuple(sorted(set(value)))


def _address(r: Reader, m: dict[str, Any], path: str, check_kind: str) -> IPAddress | None:
    """The address a check asks; a command check needs none (its program may use one: ``{address}``)."""
    if check_kind == "command":
        return r.field(m, path, "address", to_address, TEMPLATE_ADDRESS)
    return r.field(m, path, "address", to_address)


def _dns(r: Reader, m: dict[str, Any], path: str, template: bool) -> dict[str, Any]:
    d = Check.__dataclass_fields__
    if "transport" in m and "protocol" in m:
        r.problem(f"{path}.protocol", "is the older name of transport; give transport alone")
    key = "protocol" if "protocol" in m else "transport"
    transport = r.field(m, path, key, one_of(*TRANSPORTS), "udp")
    default_port = DEFAULT_PORTS.get(transport or "udp")  # pragma: no mutate (no transport: a problem already)
    values: dict[str, Any] = {
        "transport": transport,
        "port": r.field(m, path, "port", whole(1, 65535), default_port),
        "qname": r.field(m, path, "qname", to_qname, d["qname"].default),
        "qtype": r.field(m, path, "qtype", to_qtype, d["qtype"].default),
        "rcode": r.field(m, path, "rcode", to_rcode, d["rcode"].default),
        "answer": r.field(m, path, "answer", to_str, None),
        # The router reaches the service address through the very routes it manages: it probes admin addresses.
        "probe_service_addresses": False if template else r.field(m, path, "probe_service_addresses", to_bool, True),
        "dnssec": r.field(m, path, "dnssec", to_bool, False),
    }
    if transport in ("udp", "tcp"):
        for key in sorted({"tls", "reuse", "path"} & set(m)):
            r.problem(f"{path}.{key}", f"applies to transport: dot or doh, not {transport}")
            values["transport"] = None  # pragma: no mutate
    elif transport is not None:
        values["tls"] = _tls(r, m, path)
        values["reuse"] = r.field(m, path, "reuse", seconds(0, 3600, zero_ok=True), d["reuse"].default)
        if transport == "doh":
            values["path"] = r.field(m, path, "path", to_url_path, d["path"].default)
        elif "path" in m:
            r.problem(f"{path}.path", "applies to transport: doh (the URL's path), not dot")
            values["path"] = None  # pragma: no mutate
    return values


def _zone(r: Reader, m: dict[str, Any], path: str) -> dict[str, Any]:
    d = Check.__dataclass_fields__
    values: dict[str, Any] = {
        "port": r.field(m, path, "port", whole(1, 65535), 53),
        "zones": r.field(m, path, "zones", to_zones),
        "primary": r.field(m, path, "primary", to_address, None),
        "primary_port": r.field(m, path, "primary_port", whole(1, 65535), 53),
        "max_lag": r.field(m, path, "max_lag", seconds(0, 30 * 86400), d["max_lag"].default),
    }
    for key in ("primary_port", "max_lag"):
        if key in m and "primary" not in m:
            r.problem(f"{path}.{key}", "applies with a primary to compare serials with; add primary: ADDRESS")
            values[key] = None  # pragma: no mutate
    return values
