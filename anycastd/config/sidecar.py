"""The sidecar's configuration (`anycastd run`): YAML -> frozen, typed values, validated once.

Theory of operation
-------------------
The file is read by anycastd.config.yamlfile (bounded; every value keeps its line
and column), and each section by the readers here and in anycastd.config.schema,
which collect every problem instead of stopping at the first. Nothing is
returned unless the whole file is valid: ``load`` either gives a complete
``Config`` or raises ``ConfigError`` listing ``file:line:column: key.path:
problem`` lines. The router's configuration is anycastd.config.router.

Why one module of about 500 lines: one reader per section of the file
(neighbors, services, drain, ExaBGP, BFD, the return path), and the checks
across sections (a neighbor's family against the prefixes, what a reload may
change), read together as the sidecar's schema; what both daemons share is
already in anycastd.config.schema.
"""

from __future__ import annotations

import functools
import grp
import ipaddress
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anycastd.config.checks import Check, read_check
from anycastd.config.schema import (
    CONTROL_SOCKET,
    DEFAULT_RUNTIME_DIR,
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
    to_ifname,
    to_ipv4,
    to_path,
    to_prefix,
)
from anycastd.config.yamlfile import Reader, absolute_path, kind, read_text, seconds, shown, whole
from anycastd.core.attributes import PLAIN, RouteAttributes
from anycastd.core.damping import DEFAULT_DAMPING, DampingSettings
from anycastd.core.health import GRACEFUL_SHUTDOWN
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.core.syntax import MAX_PREPEND, WEIGHT_MAX, community, exabgp_problem, large_community
from anycastd.errors import ConfigError

DEFAULT_INTERFACE = "anycast0"
DEFAULT_STATE_DIR = Path("/var/lib/anycastd")
#: What a failing service does: withdraw its path, or keep it tagged GRACEFUL_SHUTDOWN (RFC 8326).
FAILURE_ACTIONS = ("withdraw", "graceful-shutdown")


@dataclass(frozen=True)
class Service:
    name: str
    prefixes: tuple[IPNetwork, ...]
    checks: tuple[Check, ...]
    interface: str = DEFAULT_INTERFACE
    allow_non_host_prefixes: bool = False
    failure_action: str = "withdraw"
    damping: DampingSettings | None = DEFAULT_DAMPING  # None: no flap damping
    bgp: RouteAttributes = PLAIN  # the path attributes its prefixes are announced with
    require: int | None = None  # how many checks must pass; None: all of them
    #: The weight while a check with degraded_when is slow (anycastd.core.degradation); None: never degraded.
    degraded_weight: int | None = None

    @property
    def graceful_shutdown(self) -> bool:
        return self.failure_action == "graceful-shutdown"

    @property
    def host_addresses(self) -> tuple[IPAddress, ...]:
        """The service addresses a probe can query: one per host-route prefix."""
        return tuple(p.network_address for p in self.prefixes if p.num_addresses == 1)


#: The smallest BGP hold time accepted: it bounds how long a dead or frozen host's paths stay on the router.
MIN_HOLD_TIME = 3


#: bfdd's bounds for its intervals (10 ms to 60 s) and RFC 5880's detect multiplier as bfdd takes it.
MIN_BFD_INTERVAL, MAX_BFD_INTERVAL = 0.01, 60.0
MIN_BFD_MULTIPLIER, MAX_BFD_MULTIPLIER = 2, 255


@dataclass(frozen=True)
class BfdSettings:
    """BFD (RFC 5880) on one BGP session, spoken by FRR's bfdd: the field's usual 300 ms x 3 by default."""

    interval: float = 0.3  # seconds: how often this side sends, and the slowest it asks the router to send
    multiplier: int = 3  # how many intervals without a packet before the session is down
    damping: bool = True  # a session that keeps failing is held back until it settles (anycastd.announce.flaps)

    @property
    def interval_ms(self) -> int:
        return round(self.interval * 1000)

    @property
    def detection_time(self) -> float:
        return self.interval * self.multiplier


@dataclass(frozen=True)
class Neighbor:
    address: IPAddress
    peer_asn: int
    local_address: IPAddress
    hold_time: int = 3
    md5_password: str | None = None
    gtsm: bool = False  # RFC 5082: accept the router's packets only with TTL 255 (the router must send 255)
    bfd: BfdSettings | None = None  # None: no BFD on this session (the hold time is the bound for a dead host)


@dataclass(frozen=True)
class ExaBGPSettings:
    command: tuple[str, ...] | None = None  # None: this Python's ``-m anycastd.announce.exabgp_run`` (ExaBGP)
    watchdog: float = 1.5
    #: The short bound: a process of the tree (anycastd, ExaBGP, its helper) that owes a heartbeat this
    #: long and is not running or waiting for a CPU is stuck, and ExaBGP is killed without waiting for
    #: ``watchdog`` (anycastd.announce.exabgp_helper.stuck).
    stall: float = 0.25


#: Where Debian's frr package puts bfdd (Red Hat's: /usr/libexec/frr/bfdd).
DEFAULT_BFDD = ("/usr/lib/frr/bfdd",)
#: The group FRR's daemons insist their user belongs to (FRR's VTY_GROUP); the frr package creates it.
FRR_VTY_GROUP = "frrvty"


@dataclass(frozen=True)
class BfddSettings:
    command: tuple[str, ...] = DEFAULT_BFDD  # bfdd, with any arguments of the operator's own


@dataclass(frozen=True)
class ReturnPathSettings:
    """The server's own routes towards ``prefixes`` (the clients, or a default route), kept by anycastd via the
    neighbors whose sessions are up (anycastd.announce.return_path)."""

    prefixes: tuple[IPNetwork, ...]
    metric: int = 0  # the kernel route's metric: the one it replaces, or one below the host's own fallback


#: The most prefixes a return path may list: a default route per family, or a handful of client ranges.
MAX_RETURN_PREFIXES = 32


@dataclass(frozen=True)
class DrainSettings:
    quiet: float = 1.0  # seconds without a query before a drain counts as done
    timeout: float = 30.0  # default for `anycastctl withdraw --wait`
    fallback: float = 5.0  # the fixed wait when traffic cannot be measured
    grace: float = 3.0  # SIGTERM: longest wait after withdrawing everything


@dataclass(frozen=True)
class Config:
    router_id: ipaddress.IPv4Address
    local_asn: int
    neighbors: tuple[Neighbor, ...]
    services: tuple[Service, ...]
    exabgp: ExaBGPSettings = ExaBGPSettings()
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    control: ControlSettings = field(default_factory=ControlSettings)
    drain: DrainSettings = DrainSettings()
    metrics: MetricsSettings | None = None  # None: no metrics endpoint
    bfdd: BfddSettings = BfddSettings()
    return_path: ReturnPathSettings | None = None  # None: the host's own routes, as they are
    source: str = "<config>"

    @property
    def bfd_neighbors(self) -> tuple[Neighbor, ...]:
        """The neighbors whose sessions have BFD: bfdd runs only when there is one."""
        return tuple(n for n in self.neighbors if n.bfd is not None)

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.runtime_dir / CONTROL_SOCKET

    def restart_only_changes(self, new: Config) -> list[str]:
        """The settings that differ in ``new`` and that a reload cannot apply (only a restart can)."""
        keys = (
            "router_id", "local_asn", "neighbors", "exabgp", "runtime_dir", "state_dir", "control", "metrics", "bfdd",
            "return_path",
        )  # fmt: skip
        return [k for k in keys if getattr(self, k) != getattr(new, k)]

    @functools.cached_property
    def by_name(self) -> dict[str, Service]:
        """The services by name, built once: a daemon with hundreds of services looks one up per announcement."""
        return {s.name: s for s in self.services}

    def service(self, name: str) -> Service:
        return self.by_name[name]


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


def _service(r: Reader, name: str, data: Any, path: str) -> Service | None:
    check_service_name(r, name, path)
    keys = {
        "prefixes", "checks", "require", "interface", "allow_non_host_prefixes", "failure_action", "damping", "bgp",
        "weight", "degraded_weight",
    }  # fmt: skip
    m = r.mapping(data, path, keys)
    if m is None:
        return None
    allow = r.field(m, path, "allow_non_host_prefixes", to_bool, False)
    interface = r.field(m, path, "interface", to_ifname, DEFAULT_INTERFACE)
    action = r.field(m, path, "failure_action", one_of(*FAILURE_ACTIONS), "withdraw")
    damping = read_damping(r, m, path)
    bgp = _attributes(r, m["bgp"], f"{path}.bgp") if "bgp" in m else PLAIN
    weight = r.field(m, path, "weight", whole(1, WEIGHT_MAX), None)
    degraded_weight = r.field(m, path, "degraded_weight", whole(1, WEIGHT_MAX), None)
    prefixes = read_prefixes(r, m, path, bool(allow))
    checks = [c for c_path, raw in r.items(m, path, "checks", "checks") if (c := read_check(r, raw, c_path))]
    require = read_require(r, m, path, len(checks))
    if allow is None or interface is None or action is None or not prefixes or not checks:  # pragma: no mutate
        return None
    bad_weight = "weight" in m and weight is None  # pragma: no mutate
    bad_degraded = "degraded_weight" in m and degraded_weight is None  # pragma: no mutate
    if bgp is None or bad_weight or bad_degraded:  # pragma: no mutate
        return None
    if not _degradation_fits(r, path, checks, weight, degraded_weight):
        return None
    bgp = bgp.weighing(weight)
    return Service(
        name, tuple(prefixes), tuple(checks), interface, allow, action, damping, bgp, require, degraded_weight
    )


def _degradation_fits(r: Reader, path: str, checks: list[Check], weight: int | None, degraded: int | None) -> bool:
    """``degraded_weight`` needs ``weight`` above it and a check with ``degraded_when``, and the reverse."""
    slow = [i for i, c in enumerate(checks) if c.degraded_when is not None]
    if degraded is None:
        for i in slow:
            r.problem(
                f"{path}.checks[{i}].degraded_when",
                "needs the service's degraded_weight (and weight): the weight its path carries while degraded",
            )
        return not slow
    if weight is None:
        r.problem(f"{path}.degraded_weight", "needs weight: degradation lowers the service's weight to this")
        return False
    if degraded >= weight:
        r.problem(f"{path}.degraded_weight", f"must be below weight ({weight}), got {degraded}")
        return False
    if not slow:
        r.problem(f"{path}.degraded_weight", "no check of the service has degraded_when, so it would never apply")
        return False
    return True


#: The most communities (or large communities) one service may carry: enough to steer, bounded.
MAX_COMMUNITIES = 32


def _attributes(r: Reader, data: Any, path: str) -> RouteAttributes | None:
    """A service's ``bgp``: communities, large_communities, med, as_path_prepend (all optional)."""
    m = r.mapping(data, path, {"communities", "large_communities", "med", "as_path_prepend"})
    if m is None:
        return None
    communities = r.field(m, path, "communities", _listed(community, "communities"), ())
    large = r.field(m, path, "large_communities", _listed(large_community, "large communities"), ())
    med = r.field(m, path, "med", whole(0, 4294967295), None)
    prepend = r.field(m, path, "as_path_prepend", whole(0, MAX_PREPEND), 0)
    if communities is not None and GRACEFUL_SHUTDOWN in communities:
        r.problem(
            f"{path}.communities",
            f"{GRACEFUL_SHUTDOWN} is GRACEFUL_SHUTDOWN (RFC 8326): routers would use this path last, always; "
            "anycastd adds it itself to a failing service with failure_action: graceful-shutdown",
        )
        return None
    if communities is None or large is None or prepend is None or ("med" in m and med is None):  # pragma: no mutate
        return None
    return RouteAttributes(tuple(communities), tuple(large), med, prepend)


def _listed(convert: Callable[[str], str], what: str) -> Callable[[Any], list[str]]:
    def read(value: Any) -> list[str]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of {what}, got {kind(value)}")
        if len(value) > MAX_COMMUNITIES:
            raise ValueError(f"must list at most {MAX_COMMUNITIES} {what}, got {len(value)}")
        out = []
        for item in value:
            if not isinstance(item, str):  # 65000:100 unquoted is YAML's sexagesimal number 3900100
                raise ValueError(f'each must be a quoted string like "65000:100", got {item!r}')
            out.append(convert(item))
        if len(set(out)) != len(out):
            raise ValueError(f"lists one of its {what} twice")
        return out

    return read


def _bfd(r: Reader, data: Any, path: str) -> BfdSettings | None:
    """A neighbor's ``bfd``: true for the defaults, false for none, or {interval, multiplier}.
    None also when it is wrong: the problem is recorded, and parsing raises."""
    if data is True:
        return BfdSettings()
    if data is False:
        return None
    if not isinstance(data, dict):
        r.problem(path, f"must be true, false or a mapping with interval, multiplier and damping, got {kind(data)}")
        return None
    m = r.mapping(data, path, {"interval", "multiplier", "damping"})
    assert m is not None  # a dict
    base = BfdSettings()
    interval = r.field(m, path, "interval", _bfd_interval, base.interval)
    multiplier = r.field(m, path, "multiplier", whole(MIN_BFD_MULTIPLIER, MAX_BFD_MULTIPLIER), base.multiplier)
    damping = r.field(m, path, "damping", to_bool, base.damping)
    if interval is None or multiplier is None or damping is None:  # pragma: no mutate
        return None
    return BfdSettings(interval, multiplier, damping)


def _bfd_interval(value: Any) -> float:
    nan = isinstance(value, float) and math.isnan(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or nan:
        raise ValueError(f"must be a number of seconds, got {shown(value)}")
    if not MIN_BFD_INTERVAL <= value <= MAX_BFD_INTERVAL:  # compared as they are: a huge int is no float
        raise ValueError(f"must be between {MIN_BFD_INTERVAL:g} and {MAX_BFD_INTERVAL:g} seconds, got {shown(value)}")
    if abs(round(value * 1000) - value * 1000) > 1e-6:
        raise ValueError(f"must be a whole number of milliseconds (bfdd counts in ms), got {value:g}")
    return float(value)


def _neighbor(r: Reader, data: Any, path: str) -> Neighbor | None:
    keys = {"address", "peer_asn", "local_address", "hold_time", "md5_password", "gtsm", "bfd"}
    m = r.mapping(data, path, keys)
    if m is None:
        return None
    address = r.field(m, path, "address", to_address)
    peer_asn = r.field(m, path, "peer_asn", whole(1, 4294967295))
    local = r.field(m, path, "local_address", to_address)
    hold = r.field(m, path, "hold_time", whole(-(2**31), 2**31), 3)
    md5 = r.field(m, path, "md5_password", _md5, None)
    gtsm = r.field(m, path, "gtsm", to_bool, False)
    bfd = _bfd(r, m["bfd"], f"{path}.bfd") if "bfd" in m else None
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
    if address is None or peer_asn is None or local is None or hold is None or gtsm is None:  # pragma: no mutate
        return None
    return Neighbor(address, peer_asn, local, hold, md5, gtsm, bfd)


def bfdd_problem(command: tuple[str, ...]) -> str | None:
    """Why bfdd cannot be run here (missing, or FRR's group missing), or None. `check-config` asks it too:
    a configuration with BFD passes only where the daemon can start bfdd."""
    if shutil.which(command[0]) is None:
        return f"needs FRR's bfdd, and {command[0]} is not there: install the Debian package frr (or set bfdd.command)"
    try:
        grp.getgrnam(FRR_VTY_GROUP)
    except KeyError:
        return f"needs FRR's group {FRR_VTY_GROUP}, which does not exist: install the Debian package frr"
    return None


def _cross_checks(r: Reader, config: Config) -> None:
    ibgp = [f"neighbors[{i}]" for i, n in enumerate(config.neighbors) if n.peer_asn == config.local_asn]
    for s in config.services:
        if s.bgp.as_path_prepend and ibgp:
            r.problem(
                f"services.{s.name}.bgp.as_path_prepend",
                f"needs eBGP neighbors, but {', '.join(ibgp)} {'is' if len(ibgp) == 1 else 'are'} iBGP "
                f"(peer_asn {config.local_asn} = local_asn): "
                "the router would see its own AS on the path and drop it",
            )
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
    "runtime_dir", "state_dir", "control", "drain", "metrics", "bfdd", "return_path",
}  # fmt: skip


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
    if any(v is None for v in values.values()):  # pragma: no mutate
        return d  # a problem is recorded: parse raises
    return DrainSettings(**{k: float(v) for k, v in values.items() if v is not None})


def _return_path(r: Reader, top: dict[str, Any]) -> ReturnPathSettings | None:
    """``return_path``: {prefixes, metric}; None also when it is wrong (the problem is recorded: parsing raises)."""
    if "return_path" not in top:
        return None
    m = r.mapping(top["return_path"], "return_path", {"prefixes", "metric"})
    if m is None:
        return None
    prefixes: list[IPNetwork] = []
    for path, raw in r.items(m, "return_path", "prefixes", "prefixes"):
        try:
            prefix = to_prefix(raw)
        except ValueError as exc:
            r.problem(path, str(exc))
            continue
        if prefix in prefixes:
            r.problem(path, f"{prefix} is listed twice")
        prefixes.append(prefix)
    if len(prefixes) > MAX_RETURN_PREFIXES:
        r.problem("return_path.prefixes", f"must list at most {MAX_RETURN_PREFIXES} prefixes, got {len(prefixes)}")
    metric = r.field(m, "return_path", "metric", whole(0, 4294967295), 0)
    if metric is None or not prefixes:  # pragma: no mutate
        return None
    return ReturnPathSettings(tuple(prefixes), metric)


def _exabgp(r: Reader, top: dict[str, Any]) -> ExaBGPSettings:
    if "exabgp" not in top:
        return ExaBGPSettings()
    e = r.mapping(top["exabgp"], "exabgp", {"command", "watchdog", "stall"})
    if e is None:
        return ExaBGPSettings()
    command = r.field(e, "exabgp", "command", to_command, None)
    watchdog = r.field(e, "exabgp", "watchdog", seconds(0.3, 60), ExaBGPSettings.watchdog)
    stall = r.field(e, "exabgp", "stall", seconds(0.1, 60), ExaBGPSettings.stall)
    watchdog = watchdog if watchdog is not None else ExaBGPSettings.watchdog  # pragma: no mutate
    stall = stall if stall is not None else ExaBGPSettings.stall  # pragma: no mutate
    if stall > watchdog:
        r.problem("exabgp.stall", f"must be at most exabgp.watchdog ({watchdog:g}), got {stall:g}")
    return ExaBGPSettings(command, watchdog, stall)


def parse(text: str, source: str = "<config>") -> Config:
    """Validate ``text`` and return the configuration, or raise ConfigError."""
    r, top = read_top(text, source, _TOP_KEYS | {"router"})
    if "router" in top:
        r.problem(
            "router",
            "this is an `anycastd router` configuration: check it with `anycastd check-config --router FILE`, "
            "run it with `anycastd router --config FILE`",
        )
        raise ConfigError(r.problems)
    router_id = r.field(top, "", "router_id", to_ipv4)
    local_asn = r.field(top, "", "local_asn", whole(1, 4294967295))
    runtime_dir = r.field(top, "", "runtime_dir", _exabgp_path, DEFAULT_RUNTIME_DIR)
    state_dir = r.field(top, "", "state_dir", to_path, DEFAULT_STATE_DIR)
    control = read_control(r, top)
    drain = _drain(r, top)
    metrics = read_metrics(r, top)
    exabgp = _exabgp(r, top)
    bfdd = BfddSettings()
    if "bfdd" in top:
        b = r.mapping(top["bfdd"], "bfdd", {"command"})
        if b is not None:
            bfdd = BfddSettings(r.field(b, "bfdd", "command", to_command, DEFAULT_BFDD) or DEFAULT_BFDD)
    return_path = _return_path(r, top)
    neighbors: list[Neighbor] = []
    for n_path, raw in r.items(top, "", "neighbors", "BGP neighbors"):
        n = _neighbor(r, raw, n_path)
        if n is None:
            continue
        if any(n.address == other.address for other in neighbors):
            r.problem(f"{n_path}.address", f"neighbor {n.address} is listed twice")
        neighbors.append(n)
    services = read_services(r, top, _service)
    refuse_shared_prefixes(r, services)
    if r.problems:
        raise ConfigError(r.problems)
    if router_id is None or local_asn is None or runtime_dir is None or state_dir is None:  # pragma: no mutate
        raise ConfigError(r.problems)  # pragma: no mutate (unreachable: a None comes with a problem)
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
        bfdd,
        return_path,
        source,
    )
    _cross_checks(r, config)
    if config.return_path is not None:
        families = {n.address.version for n in config.neighbors}
        for i, prefix in enumerate(config.return_path.prefixes):
            if prefix.version not in families:
                r.problem(
                    f"return_path.prefixes[{i}]",
                    f"{prefix} is IPv{prefix.version}, but no IPv{prefix.version} neighbor could carry it",
                )
    with_bfd = [i for i, n in enumerate(config.neighbors) if n.bfd is not None]
    if with_bfd and (problem := bfdd_problem(config.bfdd.command)) is not None:
        r.problem(f"neighbors[{with_bfd[0]}].bfd", problem)
    if r.problems:
        raise ConfigError(r.problems)
    return config


def load(path: str | Path) -> Config:
    """Read and validate a configuration file."""
    return parse(read_text(path), str(path))
