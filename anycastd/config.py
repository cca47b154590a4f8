"""YAML configuration -> frozen, typed values, validated once.

Theory of operation
-------------------
The file is composed into PyYAML nodes (not loaded straight into dicts) so
that every value keeps the line it came from. ``Reader`` walks the nodes with
a key path (``services.dns.checks[0].timeout``) and collects every problem it
meets instead of stopping at the first, so an operator fixes a file in one
round. Nothing is returned unless the whole file is valid: ``load`` either
gives a complete ``Config`` or raises ``ConfigError`` listing
``file:line: key.path: problem`` lines.
"""

from __future__ import annotations

import grp
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

from anycastd.errors import ConfigError
from anycastd.syntax import exabgp_problem
from anycastd.yamlfile import Reader, absolute_path, kind, read_text, seconds, whole
from anycastd.yamlfile import text as _text

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_INTERFACE = "anycast0"
DEFAULT_RUNTIME_DIR = Path("/run/anycastd")
DEFAULT_STATE_DIR = Path("/var/lib/anycastd")
CONTROL_SOCKET = "control.sock"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class DnsCheck:
    address: IPAddress
    port: int = 53
    qname: str = "."
    qtype: str = "SOA"
    protocol: str = "udp"
    rcode: str = "NOERROR"
    answer: str | None = None
    interval: float = 0.2
    timeout: float = 0.15
    rise: int = 3
    fall: int = 3
    fall_hard: int = 1
    probe_service_addresses: bool = True


@dataclass(frozen=True)
class Service:
    name: str
    prefixes: tuple[IPNetwork, ...]
    checks: tuple[DnsCheck, ...]
    interface: str = DEFAULT_INTERFACE
    allow_non_host_prefixes: bool = False

    @property
    def host_addresses(self) -> tuple[IPAddress, ...]:
        """The service addresses a probe can query: one per host-route prefix."""
        return tuple(p.network_address for p in self.prefixes if p.num_addresses == 1)


#: The smallest BGP hold time accepted: it bounds how long a dead or frozen host's paths stay on the router.
MIN_HOLD_TIME = 3


@dataclass(frozen=True)
class Neighbor:
    address: IPAddress
    peer_asn: int
    local_address: IPAddress
    hold_time: int = 3
    md5_password: str | None = None
    gtsm: bool = False  # RFC 5082: accept the router's packets only with TTL 255 (the router must send 255)


@dataclass(frozen=True)
class ExaBGPSettings:
    command: tuple[str, ...] | None = None  # None: this Python's ``-m exabgp``
    watchdog: float = 1.5


@dataclass(frozen=True)
class ControlSettings:
    socket: Path | None = None  # None: control.sock in the runtime directory
    group: str | None = None  # the group that may use anycastctl (mode 0660); None: root only


@dataclass(frozen=True)
class DrainSettings:
    quiet: float = 1.0  # seconds without a query before a drain counts as done
    timeout: float = 30.0  # default for `anycastctl withdraw --wait`
    fallback: float = 5.0  # the fixed wait when traffic cannot be measured
    grace: float = 3.0  # SIGTERM: longest wait after withdrawing everything


@dataclass(frozen=True)
class MetricsSettings:
    address: IPAddress
    port: int = 9553


@dataclass(frozen=True)
class Config:
    router_id: ipaddress.IPv4Address
    local_asn: int
    neighbors: tuple[Neighbor, ...]
    services: tuple[Service, ...]
    exabgp: ExaBGPSettings = ExaBGPSettings()
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    control: ControlSettings = ControlSettings()
    drain: DrainSettings = DrainSettings()
    metrics: MetricsSettings | None = None  # None: no metrics endpoint
    source: str = "<config>"

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.runtime_dir / CONTROL_SOCKET

    def restart_only_changes(self, new: Config) -> list[str]:
        """The settings that differ in ``new`` and that a reload cannot apply (only a restart can)."""
        keys = ("router_id", "local_asn", "neighbors", "exabgp", "runtime_dir", "state_dir", "control", "metrics")
        return [k for k in keys if getattr(self, k) != getattr(new, k)]

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


T = TypeVar("T")


_str = _text


def _md5(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 80 or not all(33 <= ord(c) <= 126 for c in value):
        raise ValueError("must be 1 to 80 printable ASCII characters without spaces (the TCP MD5 key limit)")
    problem = exabgp_problem(value)
    if problem is not None:
        raise ValueError(f"cannot be used: {problem}")
    return value


def _exabgp_path(value: Any) -> Path:
    """A path that reaches ExaBGP's configuration (the runtime directory): absolute, and writable there."""
    path = absolute_path(value)
    problem = exabgp_problem(str(path))
    if problem is not None:
        raise ValueError(f"cannot be used: it is written to ExaBGP's configuration, and {problem}")
    return path


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _address(value: Any) -> IPAddress:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ValueError(f"must be an IPv4 or IPv6 address, got {value!r}") from None


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ValueError(f"must be an IPv4 address, got {value!r}") from None


def _prefix(value: Any) -> IPNetwork:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"must be a prefix with a length such as 203.0.113.53/32, got {value!r}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"is not a valid prefix: {exc}") from None


def _qname(value: Any) -> str:
    try:
        return dns.name.from_text(_str(value)).to_text()
    except dns.exception.DNSException as exc:
        raise ValueError(f"is not a valid domain name: {exc}") from None


def _qtype(value: Any) -> str:
    try:
        return dns.rdatatype.to_text(dns.rdatatype.from_text(_str(value)))
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"is not a DNS record type, got {value!r}") from None


def _rcode(value: Any) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.from_text(_str(value)))
    except dns.rcode.UnknownRcode:
        raise ValueError(f"is not a DNS response code such as NOERROR or NXDOMAIN, got {value!r}") from None


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return convert


def _ifname(value: Any) -> str:
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise ValueError(f"must be an interface name of 1 to 15 letters, digits, '_', '.', '-', got {value!r}")
    return value


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > 64:
        raise ValueError(f"must be a list of 1 to 64 strings (program and arguments), got {kind(value)}")
    words = tuple(_text(v) for v in value)
    if "/" in words[0] and not words[0].startswith("/"):
        raise ValueError(f"the program must be an absolute path or a name found in PATH, got {words[0]!r}")
    return words


_path = absolute_path


_CHECK_KEYS = {
    "address", "port", "qname", "qtype", "protocol", "rcode", "answer",
    "interval", "timeout", "rise", "fall", "fall_hard", "probe_service_addresses",
}  # fmt: skip


#: The router's checks are templates: each server's admin address is filled in (see RoutedService.checks_for).
_TEMPLATE_ADDRESS = ipaddress.ip_address("0.0.0.0")  # noqa: S104 (a placeholder, never bound or queried)


def _check(r: Reader, data: Any, path: str, template: bool = False) -> DnsCheck | None:
    m = r.mapping(data, path, _CHECK_KEYS - {"address", "probe_service_addresses"} if template else _CHECK_KEYS)
    if m is None:
        return None
    d = DnsCheck.__dataclass_fields__
    values: dict[str, Any] = {
        "address": _TEMPLATE_ADDRESS if template else r.field(m, path, "address", _address),
        "port": r.field(m, path, "port", whole(1, 65535), d["port"].default),
        "qname": r.field(m, path, "qname", _qname, d["qname"].default),
        "qtype": r.field(m, path, "qtype", _qtype, d["qtype"].default),
        "protocol": r.field(m, path, "protocol", _choice("udp", "tcp"), d["protocol"].default),
        "rcode": r.field(m, path, "rcode", _rcode, d["rcode"].default),
        "answer": r.field(m, path, "answer", _str, None),
        "interval": r.field(m, path, "interval", seconds(0, 3600), d["interval"].default),
        "timeout": r.field(m, path, "timeout", seconds(0, 60), d["timeout"].default),
        "rise": r.field(m, path, "rise", whole(1, 1000), d["rise"].default),
        "fall": r.field(m, path, "fall", whole(1, 1000), d["fall"].default),
        "fall_hard": r.field(m, path, "fall_hard", whole(1, 1000), d["fall_hard"].default),
        # The router reaches the service address through the very routes it manages: it probes admin addresses.
        "probe_service_addresses": False if template else r.field(m, path, "probe_service_addresses", _bool, True),
    }
    interval, timeout = values["interval"], values["timeout"]
    if interval is not None and timeout is not None and timeout >= interval:
        r.problem(f"{path}.timeout", f"must be smaller than the interval ({interval:g} s), got {timeout:g}")
        return None
    if any(v is None for k, v in values.items() if k != "answer"):
        return None
    return DnsCheck(**values)


def _prefixes(r: Reader, m: dict[str, Any], path: str, allow_non_host: bool) -> list[IPNetwork]:
    prefixes: list[IPNetwork] = []
    for p_path, raw in r.items(m, path, "prefixes", "prefixes"):
        try:
            prefix = _prefix(raw)
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


def _service_name(r: Reader, name: str, path: str) -> None:
    if not _SERVICE_NAME.match(name):
        r.problem(path, "service names are 1 to 63 letters, digits, '_', '.', '-', starting with a letter or digit")


def _service(r: Reader, name: str, data: Any, path: str) -> Service | None:
    _service_name(r, name, path)
    m = r.mapping(data, path, {"prefixes", "checks", "interface", "allow_non_host_prefixes"})
    if m is None:
        return None
    allow = r.field(m, path, "allow_non_host_prefixes", _bool, False)
    interface = r.field(m, path, "interface", _ifname, DEFAULT_INTERFACE)
    prefixes = _prefixes(r, m, path, bool(allow))
    checks = [c for c_path, raw in r.items(m, path, "checks", "checks") if (c := _check(r, raw, c_path))]
    if allow is None or interface is None or not prefixes or not checks:
        return None
    return Service(name, tuple(prefixes), tuple(checks), interface, allow)


def _neighbor(r: Reader, data: Any, path: str) -> Neighbor | None:
    m = r.mapping(data, path, {"address", "peer_asn", "local_address", "hold_time", "md5_password", "gtsm"})
    if m is None:
        return None
    address = r.field(m, path, "address", _address)
    peer_asn = r.field(m, path, "peer_asn", whole(1, 4294967295))
    local = r.field(m, path, "local_address", _address)
    hold = r.field(m, path, "hold_time", whole(-(2**31), 2**31), 3)
    md5 = r.field(m, path, "md5_password", _md5, None)
    gtsm = r.field(m, path, "gtsm", _bool, False)
    if hold is not None and not MIN_HOLD_TIME <= hold <= 65535:
        # 0 (RFC 4271's "no keepalives") would leave a frozen or powered-off server's paths on the
        # router forever; under 3 s, RFC 4271 refuses it. The hold time is the bound for a dead host.
        why = "0 turns the router's dead-peer detection off" if hold == 0 else "RFC 4271's minimum is 3"
        r.problem(
            f"{path}.hold_time",
            f"must be between {MIN_HOLD_TIME} and 65535 seconds ({why}), got {hold}",
        )
        return None
    if address is not None and local is not None and address.version != local.version:
        r.problem(f"{path}.local_address", f"must be of the same family as address {address}, got {local}")
        return None
    if address is None or peer_asn is None or local is None or hold is None or gtsm is None:
        return None
    return Neighbor(address, peer_asn, local, hold, md5, gtsm)


def _cross_checks(r: Reader, config: Config) -> None:
    admin: dict[IPAddress, str] = {}
    for i, n in enumerate(config.neighbors):
        admin[n.local_address] = f"neighbors[{i}].local_address"
    for s in config.services:
        for j, c in enumerate(s.checks):
            admin.setdefault(c.address, f"services.{s.name}.checks[{j}].address")
    families = {n.address.version for n in config.neighbors}
    for s in config.services:
        for i, p in enumerate(s.prefixes):
            path = f"services.{s.name}.prefixes[{i}]"
            for addr, where in admin.items():
                if addr in p:
                    r.problem(path, f"{p} contains the admin address {addr} ({where}); the service address must differ")
            if p.version not in families:
                r.problem(path, f"{p} is IPv{p.version} but no IPv{p.version} neighbor is configured to carry it")


_TOP_KEYS = {
    "router_id", "local_asn", "neighbors", "services", "exabgp",
    "runtime_dir", "state_dir", "control", "drain", "metrics",
}  # fmt: skip


def _group(value: Any) -> str:
    text = _str(value)
    try:
        grp.getgrnam(text)
    except KeyError:
        raise ValueError(
            f"no such group {text!r} on this host (create it, or leave the key out for root only)"
        ) from None
    return text


def _control(r: Reader, top: dict[str, Any]) -> ControlSettings:
    if "control" not in top:
        return ControlSettings()
    m = r.mapping(top["control"], "control", {"socket", "group"})
    if m is None:
        return ControlSettings()
    return ControlSettings(r.field(m, "control", "socket", _path, None), r.field(m, "control", "group", _group, None))


def _drain(r: Reader, top: dict[str, Any]) -> DrainSettings:
    d = DrainSettings()
    if "drain" not in top:
        return d
    m = r.mapping(top["drain"], "drain", {"quiet", "timeout", "fallback", "grace"})
    if m is None:
        return d
    values = {
        "quiet": r.field(m, "drain", "quiet", seconds(0, 600), d.quiet),
        "timeout": r.field(m, "drain", "timeout", seconds(0, 3600), d.timeout),
        "fallback": r.field(m, "drain", "fallback", seconds(0, 600), d.fallback),
        "grace": r.field(m, "drain", "grace", seconds(0, 600, zero_ok=True), d.grace),
    }
    return DrainSettings(**{k: v for k, v in values.items() if v is not None})


def _metrics(r: Reader, top: dict[str, Any]) -> MetricsSettings | None:
    raw = top.get("metrics")
    if raw is None or raw is False:
        return None  # off unless asked for
    m = r.mapping(raw, "metrics", {"address", "port"})
    if m is None:
        return None
    address = r.field(m, "metrics", "address", _address, ipaddress.ip_address("127.0.0.1"))
    port = r.field(m, "metrics", "port", whole(1, 65535), MetricsSettings.port)
    if address is None or port is None:
        return None
    return MetricsSettings(address, port)


def _services(r: Reader, top: dict[str, Any], parse_one: Callable[[Reader, str, Any, str], T | None]) -> list[T]:
    """The ``services`` mapping, each entry read by ``parse_one`` (a sidecar's or a router's service)."""
    raw_services = top.get("services")
    if not isinstance(raw_services, dict) or not raw_services:
        r.problem("services", f"must be a mapping of service name to service, got {kind(raw_services)}")
        return []
    return [s for name, raw in raw_services.items() if (s := parse_one(r, name, raw, f"services.{name}")) is not None]


def _top(text: str, source: str, keys: set[str]) -> tuple[Reader, dict[str, Any]]:
    r = Reader(source)
    top = r.mapping(r.document(text), "", keys)
    if top is None:
        raise r.fail()
    return r, top


def parse(text: str, source: str = "<config>") -> Config:
    """Validate ``text`` and return the configuration, or raise ConfigError."""
    r, top = _top(text, source, _TOP_KEYS | {"router"})
    if "router" in top:
        r.problem(
            "router",
            "this is an `anycastd router` configuration: check it with `anycastd check-config --router FILE`, "
            "run it with `anycastd router --config FILE`",
        )
        raise ConfigError(r.problems)
    router_id = r.field(top, "", "router_id", _ipv4)
    local_asn = r.field(top, "", "local_asn", whole(1, 4294967295))
    runtime_dir = r.field(top, "", "runtime_dir", _exabgp_path, DEFAULT_RUNTIME_DIR)
    state_dir = r.field(top, "", "state_dir", _path, DEFAULT_STATE_DIR)
    control = _control(r, top)
    drain = _drain(r, top)
    metrics = _metrics(r, top)
    exabgp = ExaBGPSettings()
    if "exabgp" in top:
        e = r.mapping(top["exabgp"], "exabgp", {"command", "watchdog"})
        if e is not None:
            command = r.field(e, "exabgp", "command", _command, None)
            watchdog = r.field(e, "exabgp", "watchdog", seconds(0.3, 60), ExaBGPSettings.watchdog)
            exabgp = ExaBGPSettings(command, watchdog if watchdog is not None else ExaBGPSettings.watchdog)
    neighbors: list[Neighbor] = []
    for n_path, raw in r.items(top, "", "neighbors", "BGP neighbors"):
        n = _neighbor(r, raw, n_path)
        if n is None:
            continue
        if any(n.address == other.address for other in neighbors):
            r.problem(f"{n_path}.address", f"neighbor {n.address} is listed twice")
        neighbors.append(n)
    services = _services(r, top, _service)
    if r.problems or router_id is None or local_asn is None or runtime_dir is None or state_dir is None:
        raise ConfigError(r.problems)
    config = Config(
        router_id,
        local_asn,
        tuple(neighbors),
        tuple(services),
        exabgp,
        runtime_dir,
        state_dir,
        control,
        drain,
        metrics,
        source,
    )
    _cross_checks(r, config)
    if r.problems:
        raise ConfigError(r.problems)
    return config


_read = read_text


def load(path: str | Path) -> Config:
    """Read and validate a configuration file."""
    return parse(_read(path), str(path))


# the router-side variant ----------------------------------------------------------------------------------

DEFAULT_ROUTE_TAG = 5353
DEFAULT_ROUTER_STATE_DIR = Path("/var/lib/anycastd-router")
WHEN_ALL_DOWN = ("keep", "withdraw")


@dataclass(frozen=True)
class Server:
    name: str
    address: IPAddress  # the admin address: what is probed
    nexthops: tuple[IPAddress, ...]  # at most one per family; the static routes point here

    def nexthop_for(self, prefix: IPNetwork) -> IPAddress:
        return next(n for n in self.nexthops if n.version == prefix.version)


@dataclass(frozen=True)
class RoutedService:
    name: str
    prefixes: tuple[IPNetwork, ...]
    checks: tuple[DnsCheck, ...]  # templates: the address is each server's
    servers: tuple[Server, ...]

    def checks_for(self, server: Server) -> tuple[DnsCheck, ...]:
        return tuple(replace(c, address=server.address) for c in self.checks)

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)


@dataclass(frozen=True)
class VtyshSettings:
    command: tuple[str, ...] = ("vtysh",)
    timeout: float = 5.0  # seconds one vtysh call may take
    resync: float = 10.0  # seconds between reads of FRR that repair drift (FRR restarted, a hand edit)


@dataclass(frozen=True)
class RouterConfig:
    services: tuple[RoutedService, ...]
    vtysh: VtyshSettings = VtyshSettings()
    tag: int = DEFAULT_ROUTE_TAG
    when_all_down: str = "keep"
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    state_dir: Path = DEFAULT_ROUTER_STATE_DIR
    control: ControlSettings = ControlSettings()
    metrics: MetricsSettings | None = None
    source: str = "<config>"

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.runtime_dir / CONTROL_SOCKET

    def service(self, name: str) -> RoutedService:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def server_names(self) -> list[str]:
        return sorted({server.name for s in self.services for server in s.servers})


_SERVER_KEYS = {"name", "address", "nexthops", "weight"}


def _server(r: Reader, data: Any, path: str) -> Server | None:
    m = r.mapping(data, path, _SERVER_KEYS)
    if m is None:
        return None
    name = r.field(m, path, "name", _str)
    if name is not None and not _SERVICE_NAME.match(name):
        r.problem(
            f"{path}.name",
            "server names are 1 to 63 letters, digits, '_', '.', '-', starting with one of the first two",
        )
        name = None
    address = r.field(m, path, "address", _address)
    if "weight" in m and m["weight"] != 1:
        r.problem(
            f"{path}.weight",
            "FRR's staticd installs equal-cost paths only, so every server weighs 1; remove the key "
            "(to give a server more traffic, give it more service addresses)",
        )
    nexthops: list[IPAddress] = []
    if "nexthops" in m:
        raw = m["nexthops"]
        if not isinstance(raw, list) or not raw:
            r.problem(f"{path}.nexthops", f"must be a non-empty list of addresses, got {kind(raw)}")
            return None
        for i, item in enumerate(raw):
            try:
                nexthop = _address(item)
            except ValueError as exc:
                r.problem(f"{path}.nexthops[{i}]", str(exc))
                continue
            if any(n.version == nexthop.version for n in nexthops):
                r.problem(f"{path}.nexthops[{i}]", f"a second IPv{nexthop.version} nexthop; give one per family")
                continue
            nexthops.append(nexthop)
    elif address is not None:
        nexthops.append(address)  # the usual case: the admin address is on the link to the router
    if name is None or address is None or not nexthops:
        return None
    return Server(name, address, tuple(nexthops))


def _routed_service(r: Reader, name: str, data: Any, path: str) -> RoutedService | None:
    _service_name(r, name, path)
    m = r.mapping(data, path, {"prefixes", "checks", "servers", "allow_non_host_prefixes"})
    if m is None:
        return None
    allow = r.field(m, path, "allow_non_host_prefixes", _bool, False)
    prefixes = _prefixes(r, m, path, bool(allow))
    if "checks" in m:
        checks = [c for c_path, raw in r.items(m, path, "checks", "checks") if (c := _check(r, raw, c_path, True))]
    else:
        checks = [DnsCheck(_TEMPLATE_ADDRESS, probe_service_addresses=False)]
    servers: list[Server] = []
    for s_path, raw in r.items(m, path, "servers", "servers"):
        server = _server(r, raw, s_path)
        if server is None:
            continue
        for other in servers:
            if other.name == server.name:
                r.problem(f"{s_path}.name", f"server {server.name!r} is listed twice in this service")
            elif other.address == server.address:
                r.problem(f"{s_path}.address", f"{server.address} is already the address of server {other.name!r}")
        for prefix in prefixes:
            if not any(n.version == prefix.version for n in server.nexthops):
                r.problem(
                    f"{s_path}.nexthops",
                    f"server {server.name!r} has no IPv{prefix.version} nexthop for {prefix}; add one to nexthops",
                )
        for address in (server.address, *server.nexthops):
            for prefix in prefixes:
                if address in prefix:
                    r.problem(
                        f"{s_path}",
                        f"{address} is inside the service prefix {prefix}; the server's own "
                        "addresses must differ from the service address",
                    )
        servers.append(server)
    if not prefixes or not checks or not servers or allow is None:
        return None
    return RoutedService(name, tuple(prefixes), tuple(checks), tuple(servers))


def _vtysh(r: Reader, raw: dict[str, Any]) -> VtyshSettings:
    d = VtyshSettings()
    command = r.field(raw, "router", "vtysh", _command, d.command)
    timeout = r.field(raw, "router", "vtysh_timeout", seconds(0, 120), d.timeout)
    resync = r.field(raw, "router", "resync", seconds(0, 3600), d.resync)
    return VtyshSettings(command or d.command, timeout or d.timeout, resync or d.resync)


_ROUTER_TOP_KEYS = {"router", "services", "runtime_dir", "state_dir", "control", "metrics"}
_ROUTER_KEYS = {"vtysh", "vtysh_timeout", "resync", "tag", "when_all_down"}


def parse_router(text: str, source: str = "<config>") -> RouterConfig:
    """Validate an `anycastd router` configuration and return it, or raise ConfigError."""
    r, top = _top(text, source, _ROUTER_TOP_KEYS)
    raw_router = top.get("router", {})
    m = r.mapping(raw_router, "router", _ROUTER_KEYS) if raw_router is not None else {}
    m = m if m is not None else {}
    vtysh = _vtysh(r, m)
    tag = r.field(m, "router", "tag", whole(1, 4294967295), DEFAULT_ROUTE_TAG)
    when_all_down = r.field(m, "router", "when_all_down", _choice(*WHEN_ALL_DOWN), "keep")
    runtime_dir = r.field(top, "", "runtime_dir", _path, DEFAULT_RUNTIME_DIR)
    state_dir = r.field(top, "", "state_dir", _path, DEFAULT_ROUTER_STATE_DIR)
    control = _control(r, top)
    metrics = _metrics(r, top)
    services = _services(r, top, _routed_service)
    owner: dict[IPNetwork, str] = {}
    for s in services:
        for i, prefix in enumerate(s.prefixes):
            if prefix in owner:
                r.problem(
                    f"services.{s.name}.prefixes[{i}]", f"{prefix} is already a prefix of service {owner[prefix]!r}"
                )
            owner.setdefault(prefix, s.name)
    if r.problems or tag is None or when_all_down is None or runtime_dir is None or state_dir is None:
        raise ConfigError(r.problems)
    return RouterConfig(tuple(services), vtysh, tag, when_all_down, runtime_dir, state_dir, control, metrics, source)


def load_router(path: str | Path) -> RouterConfig:
    """Read and validate an `anycastd router` configuration file."""
    return parse_router(_read(path), str(path))
