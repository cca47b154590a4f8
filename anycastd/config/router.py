"""The router's configuration (`anycastd router`): YAML -> frozen, typed values, validated once.

The same reader and shared sections as the sidecar's (anycastd.config.schema); this
module adds the servers, their nexthops, and vtysh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anycastd.config.checks import TEMPLATE_ADDRESS, Check, read_check
from anycastd.config.schema import (
    CONTROL_SOCKET,
    DEFAULT_RUNTIME_DIR,
    SERVICE_NAME,
    ControlSettings,
    MetricsSettings,
    check_service_name,
    one_of,
    read_control,
    read_damping,
    read_metrics,
    read_prefixes,
    read_require,
    read_services,
    read_top,
    refuse_shared_prefixes,
    to_address,
    to_bool,
    to_command,
    to_path,
    to_str,
)
from anycastd.config.yamlfile import Reader, kind, read_text, seconds, whole
from anycastd.core.damping import DEFAULT_DAMPING, DampingSettings
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.errors import ConfigError

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
    checks: tuple[Check, ...]  # templates: the address is each server's
    servers: tuple[Server, ...]
    damping: DampingSettings | None = DEFAULT_DAMPING  # per server of the service; None: no flap damping
    require: int | None = None  # how many of a server's checks must pass; None: all of them

    @property
    def cascade_window(self) -> float:
        """How far apart the verdicts on servers that fail at the same instant can come: one is refused at
        its next probe, another needs ``fall`` probes an interval apart, the last waiting its timeout.
        Failures this close are one cascade (anycastd.core.routes)."""
        return max(max(c.fall, c.fall_hard) * c.interval + c.timeout for c in self.checks)

    def checks_for(self, server: Server) -> tuple[Check, ...]:
        return tuple(replace(c, address=server.address) for c in self.checks)

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)


@dataclass(frozen=True)
class VtyshSettings:
    command: tuple[str, ...] = ("vtysh",)
    timeout: float = 5.0  # seconds one vtysh call may take
    resync: float = 10.0  # seconds between reads of FRR that repair drift (FRR restarted, a hand edit)
    #: "vty": one kept-open session per daemon on its VTY socket; "vtysh": one vtysh process per call.
    session: str = "vty"

    @property
    def vty_dir(self) -> Path:
        """Where FRR's daemons keep their VTY sockets, as vtysh with these arguments finds them: its own
        ``--vty_socket``, else FRR's directory, in the pathspace ``-N``/``--pathspace`` names if any."""
        given = vtysh_options(self.command)
        if "--vty_socket" in given:
            return Path(given["--vty_socket"])
        return FRR_VTY_DIR / given["-N"] if "-N" in given else FRR_VTY_DIR


#: FRR's own directory for its daemons' sockets (Debian's build: --localstatedir=/var/run/frr).
FRR_VTY_DIR = Path("/var/run/frr")
#: What a pathspace may be called: one directory name under FRR_VTY_DIR.
_PATHSPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")


def vtysh_options(argv: tuple[str, ...]) -> dict[str, str]:
    """The options of a vtysh command line that say where FRR's sockets are, as vtysh's getopt reads them:
    ``--vty_socket DIR`` (or ``=DIR``), and the pathspace as ``-N NAME``, ``-NNAME``, ``--pathspace NAME`` or
    ``--pathspace=NAME``, under the key ``-N``. The last one given wins, as with getopt."""
    found: dict[str, str] = {}
    words = list(argv[1:])
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--vty_socket", "--pathspace", "-N"):
            if i + 1 < len(words):
                found["--vty_socket" if word == "--vty_socket" else "-N"] = words[i + 1]
            i += 1
        elif word.startswith(("--vty_socket=", "--pathspace=")):
            option, _, value = word.partition("=")
            found["--vty_socket" if option == "--vty_socket" else "-N"] = value
        elif word.startswith("-N"):
            found["-N"] = word[2:]
        i += 1
    return found


def _vtysh_command(value: Any) -> tuple[str, ...]:
    """``router.vtysh``: a command line, whose pathspace (if any) names one directory under FRR's."""
    command = to_command(value)
    given = vtysh_options(command)
    pathspace = given.get("-N")
    if pathspace is not None and "--vty_socket" not in given and not _PATHSPACE.match(pathspace):
        raise ValueError(
            f"names the pathspace {pathspace[:40]!r}, which is not one directory name (letters, digits, "
            f"'_', '.', '-'): FRR's sockets would be looked for outside {FRR_VTY_DIR}"
        )
    return command


@dataclass(frozen=True)
class RouterConfig:
    services: tuple[RoutedService, ...]
    vtysh: VtyshSettings = VtyshSettings()
    tag: int = DEFAULT_ROUTE_TAG
    when_all_down: str = "keep"
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    state_dir: Path = DEFAULT_ROUTER_STATE_DIR
    control: ControlSettings = field(default_factory=ControlSettings)
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
    name = r.field(m, path, "name", to_str)
    if name is not None and not SERVICE_NAME.match(name):
        r.problem(
            f"{path}.name",
            "server names are 1 to 63 letters, digits, '_', '.', '-', starting with one of the first two",
        )
        name = None
    address = r.field(m, path, "address", to_address)
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
                nexthop = to_address(item)
            except ValueError as exc:
                r.problem(f"{path}.nexthops[{i}]", str(exc))
                continue
            if any(n.version == nexthop.version for n in nexthops):
                r.problem(f"{path}.nexthops[{i}]", f"a second IPv{nexthop.version} nexthop; give one per family")
                continue
            nexthops.append(nexthop)
    elif address is not None:
        nexthops.append(address)  # the usual case: the admin address is on the link to the router
    if name is None or address is None or not nexthops:  # pragma: no mutate
        return None
    return Server(name, address, tuple(nexthops))


def _routed_service(r: Reader, name: str, data: Any, path: str) -> RoutedService | None:
    check_service_name(r, name, path)
    m = r.mapping(data, path, {"prefixes", "checks", "require", "servers", "allow_non_host_prefixes", "damping"})
    if m is None:
        return None
    allow = r.field(m, path, "allow_non_host_prefixes", to_bool, False)
    damping = read_damping(r, m, path)
    prefixes = read_prefixes(r, m, path, bool(allow))
    if "checks" in m:
        checks = [c for c_path, raw in r.items(m, path, "checks", "checks") if (c := read_check(r, raw, c_path, True))]
        for i, c in enumerate(checks):
            if c.degraded_when is not None:
                r.problem(
                    f"{path}.checks[{i}].degraded_when",
                    "lowers a BGP path's weight, and `anycastd router`'s static routes weigh the same "
                    "(FRR's staticd); the sidecar takes it",
                )
    else:
        checks = [Check(TEMPLATE_ADDRESS, probe_service_addresses=False)]
    require = read_require(r, m, path, len(checks))
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
    if not prefixes or not checks or not servers or allow is None:  # pragma: no mutate
        return None
    return RoutedService(name, tuple(prefixes), tuple(checks), tuple(servers), damping, require)


def _vtysh(r: Reader, raw: dict[str, Any]) -> VtyshSettings:
    d = VtyshSettings()
    command = r.field(raw, "router", "vtysh", _vtysh_command, d.command)
    timeout = r.field(raw, "router", "vtysh_timeout", seconds(0, 120), d.timeout)
    resync = r.field(raw, "router", "resync", seconds(0, 3600), d.resync)
    session = r.field(raw, "router", "frr_session", one_of(*SESSIONS), d.session)
    if command is None or timeout is None or resync is None or session is None:  # pragma: no mutate
        return d  # a problem is recorded: parse raises
    return VtyshSettings(command, timeout, resync, session)


_ROUTER_TOP_KEYS = {"router", "services", "runtime_dir", "state_dir", "control", "metrics"}
_ROUTER_KEYS = {"vtysh", "vtysh_timeout", "resync", "tag", "when_all_down", "frr_session"}
SESSIONS = ("vty", "vtysh")


def parse_router(text: str, source: str = "<config>") -> RouterConfig:
    """Validate an `anycastd router` configuration and return it, or raise ConfigError."""
    r, top = read_top(text, source, _ROUTER_TOP_KEYS)
    raw_router = top.get("router", {})
    m = r.mapping(raw_router, "router", _ROUTER_KEYS) if raw_router is not None else {}
    m = m if m is not None else {}
    vtysh = _vtysh(r, m)
    tag = r.field(m, "router", "tag", whole(1, 4294967295), DEFAULT_ROUTE_TAG)
    when_all_down = r.field(m, "router", "when_all_down", one_of(*WHEN_ALL_DOWN), "keep")
    runtime_dir = r.field(top, "", "runtime_dir", to_path, DEFAULT_RUNTIME_DIR)
    state_dir = r.field(top, "", "state_dir", to_path, DEFAULT_ROUTER_STATE_DIR)
    control = read_control(r, top)
    metrics = read_metrics(r, top)
    services = read_services(r, top, _routed_service)
    refuse_shared_prefixes(r, services)
    if r.problems or tag is None or when_all_down is None or runtime_dir is None or state_dir is None:
        raise ConfigError(r.problems)
    return RouterConfig(tuple(services), vtysh, tag, when_all_down, runtime_dir, state_dir, control, metrics, source)


def load_router(path: str | Path) -> RouterConfig:
    """Read and validate an `anycastd router` configuration file."""
    return parse_router(read_text(path), str(path))
