"""What both configurations share: DNS checks, the control socket, metrics, and the readers of each value.

Theory of operation
-------------------
A configuration file is read by anycastd.config.yamlfile (bounded, every value with
its line and column) into plain values; the schema modules then turn those
into frozen, typed values, validated once. This module holds what the
sidecar's schema (anycastd.config.sidecar) and the router's (anycastd.config.router)
have in common: the converters of single values (``to_address``,
``to_prefix``, ...), the readers of shared sections (``read_check``,
``read_control``, ``read_metrics``), and ``read_top``, which starts every
file. Readers collect every problem they meet instead of stopping at the
first, so an operator fixes a file in one round.
"""

from __future__ import annotations

import grp
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

from anycastd import DOC_DIR
from anycastd.config.yamlfile import Reader, absolute_path, kind, seconds, shown, whole
from anycastd.config.yamlfile import text as _text
from anycastd.core.damping import DampingSettings
from anycastd.core.net import IPAddress, IPNetwork

DEFAULT_RUNTIME_DIR = Path("/run/anycastd")
CONTROL_SOCKET = "control.sock"
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


@dataclass(frozen=True)
class ControlSettings:
    socket: Path | None = None  # None: control.sock in the runtime directory
    group: str | None = None  # the group that may use anycastctl (mode 0660); None: root only


@dataclass(frozen=True)
class MetricsSettings:
    address: IPAddress
    port: int = 9553


T = TypeVar("T")


to_str = _text


def to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


#: Why no address or prefix of either configuration may carry an IPv6 zone id (``fe80::1%eth0``): Python reads
#: one, but ExaBGP's configuration, vtysh, bfdd and the kernel's routes, where each address goes, cannot.
ZONE_ID = "must not carry a zone id (%{zone}): ExaBGP, FRR and the kernel's routes take plain addresses. {fix}"
ADDRESS_FIX = "Use a global address (a link-local BGP neighbor or server is not supported)"
PREFIX_FIX = "A service prefix is bound on its service's interface (services.NAME.interface); give it without one"


def _no_zone(value: str, fix: str = ADDRESS_FIX) -> None:
    if "%" in value:
        raise ValueError(ZONE_ID.format(zone=value.partition("%")[2].partition("/")[0][:16], fix=fix))


def to_address(value: Any) -> IPAddress:
    """An IPv4 or IPv6 address, as every address field of both configurations reads one."""
    if isinstance(value, str):
        _no_zone(value)
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ValueError(f"must be an IPv4 or IPv6 address, got {value!r}") from None


def to_ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ValueError(f"must be an IPv4 address, got {value!r}") from None


def to_prefix(value: Any) -> IPNetwork:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"must be a prefix with a length such as 203.0.113.53/32, got {value!r}")
    _no_zone(value, PREFIX_FIX)
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"is not a valid prefix: {exc}") from None


def to_qname(value: Any) -> str:
    try:
        return dns.name.from_text(to_str(value)).to_text()
    except dns.exception.DNSException as exc:
        raise ValueError(f"is not a valid domain name: {exc}") from None


def to_qtype(value: Any) -> str:
    try:
        return dns.rdatatype.to_text(dns.rdatatype.from_text(to_str(value)))
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"is not a DNS record type, got {value!r}") from None


def to_rcode(value: Any) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.from_text(to_str(value)))
    except dns.rcode.UnknownRcode:
        raise ValueError(f"is not a DNS response code such as NOERROR or NXDOMAIN, got {value!r}") from None


def one_of(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return convert


def to_ifname(value: Any) -> str:
    if not isinstance(value, str) or not IFNAME.match(value):
        raise ValueError(f"must be an interface name of 1 to 15 letters, digits, '_', '.', '-', got {value!r}")
    return value


def to_command(value: Any, shape: str = "program and arguments") -> tuple[str, ...]:
    """An argv: 1 to 64 words, the program an absolute path or a bare name; ``shape`` says what the list holds."""
    if not isinstance(value, list) or not value or len(value) > 64:
        raise ValueError(f"must be a list of 1 to 64 strings ({shape}), got {kind(value)}")
    words = tuple(_text(v) for v in value)
    if "/" in words[0] and not words[0].startswith("/"):
        raise ValueError(f"the program must be an absolute path or a name found in PATH, got {words[0]!r}")
    return words


to_path = absolute_path


def read_prefixes(r: Reader, m: dict[str, Any], path: str, allow_non_host: bool) -> list[IPNetwork]:
    prefixes: list[IPNetwork] = []
    for p_path, raw in r.items(m, path, "prefixes", "prefixes"):
        try:
            prefix = to_prefix(raw)
        except ValueError as exc:
            r.problem(p_path, str(exc))
            continue
        if prefix.num_addresses != 1 and not allow_non_host:
            r.problem(
                p_path,
                f"{prefix} is not a host route (/32 or /128); set allow_non_host_prefixes: true if you mean it",
            )
        elif prefix in prefixes:
            r.problem(p_path, f"{prefix} is listed twice")
        prefixes.append(prefix)
    return prefixes


def check_service_name(r: Reader, name: str, path: str) -> None:
    if not SERVICE_NAME.match(name):
        r.problem(path, "service names are 1 to 63 letters, digits, '_', '.', '-', starting with a letter or digit")


def to_group(value: Any) -> str:
    text = to_str(value)
    try:
        grp.getgrnam(text)
    except KeyError:
        raise ValueError(
            f"no such group {text!r} on this host (create it, or leave the key out for root only)"
        ) from None
    return text


def read_control(r: Reader, top: dict[str, Any]) -> ControlSettings:
    if "control" not in top:
        return ControlSettings()
    m = r.mapping(top["control"], "control", {"socket", "group"})
    if m is None:
        return ControlSettings()
    return ControlSettings(
        r.field(m, "control", "socket", to_path, None), r.field(m, "control", "group", to_group, None)
    )


def read_metrics(r: Reader, top: dict[str, Any]) -> MetricsSettings | None:
    raw = top.get("metrics")
    if raw is None or raw is False:
        return None  # off unless asked for
    m = r.mapping(raw, "metrics", {"address", "port"})
    if m is None:
        return None
    address = r.field(m, "metrics", "address", to_address, ipaddress.ip_address("127.0.0.1"))
    port = r.field(m, "metrics", "port", whole(1, 65535), MetricsSettings.port)
    if address is None or port is None:  # pragma: no mutate
        return None
    return MetricsSettings(address, port)


def read_services(r: Reader, top: dict[str, Any], parse_one: Callable[[Reader, str, Any, str], T | None]) -> list[T]:
    """The ``services`` mapping, each entry read by ``parse_one`` (a sidecar's or a router's service)."""
    raw_services = top.get("services")
    if not isinstance(raw_services, dict) or not raw_services:
        r.problem("services", f"must be a mapping of service name to service, got {kind(raw_services)}")
        return []
    return [s for name, raw in raw_services.items() if (s := parse_one(r, name, raw, f"services.{name}")) is not None]


class HasPrefixes(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]: ...


def refuse_shared_prefixes(r: Reader, services: Sequence[HasPrefixes]) -> None:
    """A prefix belongs to one service: two would announce (or route) it on two services' verdicts, and
    the first to fail would take it away from the other."""
    owner: dict[IPNetwork, str] = {}
    for s in services:
        for i, prefix in enumerate(s.prefixes):
            first = owner.setdefault(prefix, s.name)
            if first != s.name:  # within one service, a prefix given twice is its reader's problem
                r.problem(f"services.{s.name}.prefixes[{i}]", f"{prefix} is already a prefix of service {first!r}")


#: The line the Debian package adds to the examples it installs in /etc/anycastd: nothing runs from them
#: as they stand (debian/mark-example).
EXAMPLE_KEY = "example"
EXAMPLE_PROBLEM = (
    "this is the example the package installed, not this host's configuration: describe this host's "
    f"services ({DOC_DIR}/configuration.md), then delete this line"
)


def read_top(text: str, source: str, keys: set[str]) -> tuple[Reader, dict[str, Any]]:
    r = Reader(source)
    document = r.document(text)
    if isinstance(document, dict) and EXAMPLE_KEY in document:
        r.problem(EXAMPLE_KEY, EXAMPLE_PROBLEM)  # alone: the rest is the example's, and valid
        raise r.fail()
    top = r.mapping(document, "", keys)
    if top is None:
        raise r.fail()
    return r, top


def requirement(count: int) -> Callable[[Any], int]:
    """A service's ``require``: ``all`` (every one of its ``count`` checks), ``any`` (one), or a number of
    checks from 1 to ``count``; as that number."""

    def convert(value: Any) -> int:
        if value == "all":
            return count
        if value == "any":
            return 1
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= count:
            return value
        raise ValueError(
            f"must be all, any, or how many of its {count} checks must pass (1 to {count}), got "
            + (kind(value) if isinstance(value, list | dict) else shown(value))
        )

    return convert


def read_require(r: Reader, m: dict[str, Any], path: str, count: int) -> int | None:
    """``require`` of a service with ``count`` checks; None when absent (all of them) or wrong (recorded)."""
    if "require" not in m or count == 0:
        return None  # absent: all; no valid check: their problems are what to fix first
    return r.field(m, path, "require", requirement(count))


DAMPING_KEYS = {"penalty", "half_life", "suppress", "reuse", "max_suppress"}


def read_damping(r: Reader, m: dict[str, Any], path: str) -> DampingSettings | None:
    """A service's ``damping``: absent or true for the defaults, false for none, or a mapping of settings.
    None also when it is wrong: the problem is recorded, and parsing raises."""
    if "damping" not in m or m["damping"] is True:
        return DampingSettings()
    if m["damping"] is False:
        return None
    d_path = f"{path}.damping"
    d = r.mapping(m["damping"], d_path, DAMPING_KEYS)
    if d is None:
        return None
    base = DampingSettings()
    values = {
        "penalty": r.field(d, d_path, "penalty", whole(1, 1_000_000), base.penalty),
        "half_life": r.field(d, d_path, "half_life", seconds(0, 3600), base.half_life),
        "suppress": r.field(d, d_path, "suppress", whole(1, 1_000_000), base.suppress),
        "reuse": r.field(d, d_path, "reuse", whole(1, 1_000_000), base.reuse),
        "max_suppress": r.field(d, d_path, "max_suppress", seconds(0, 86400), base.max_suppress),
    }
    given = {k: float(v) for k, v in values.items() if v is not None}
    if len(given) < len(values):  # pragma: no mutate
        return None
    if not given["reuse"] < given["suppress"]:
        r.problem(f"{d_path}.reuse", f"must be below suppress ({given['suppress']:g}), got {given['reuse']:g}")
        return None
    return DampingSettings(**given)
