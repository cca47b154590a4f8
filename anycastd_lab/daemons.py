"""The lab's daemons: FRR on the router, BIND or Unbound and anycastd on each server, or `anycastd router`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from anycastd.config.sidecar import parse as parse_config
from anycastd_lab.topology import (
    HEALTH_QNAME,
    ROUTER_ASN,
    SERVICE_V4,
    SERVICE_V6,
    WHOAMI_QNAME,
    Lab,
    Server,
    frr_file,
    run,
    wait_until,
)

FRR_DIR = Path("/usr/lib/frr")
ZONE_FILE = "/etc/bind/db.example"  # where a BIND server's zone is bound in the topology file
METRICS_PORT = 9553
ZEBRA_LINES = ("zebra ", "no zebra ")  # zebra's global settings in frr.conf


def frr_bgp_config() -> str:
    """frr/bgp/frr.conf as users copy it: ECMP over eBGP, the prefix filter, 1/3 s timers."""
    return frr_file("bgp/frr.conf").read_text()


def start_frr(lab: Lab, config: str, daemons: tuple[str, ...] = ("zebra", "bgpd"), node: str | None = None) -> None:
    """FRR's ``daemons`` on the router (or on router ``node`` of a topology with several), from ``config``."""
    rdir = router_dir(lab, node)
    rdir.mkdir(exist_ok=True)
    ns = lab.router if node is None else lab.ns(node)
    for daemon in daemons:
        # Each daemon gets only its own part, so none logs the others' lines as errors.
        conf = rdir / f"{daemon}.conf"
        conf.write_text(daemon_part(config, daemon))
        run("chown", "-R", "frr:frr", str(rdir))
        argv = [
            str(FRR_DIR / daemon),
            "-d",
            "-f", str(conf),
            "-i", str(rdir / f"{daemon}.pid"),
            "-z", str(rdir / "zserv.api"),
            "--vty_socket", str(rdir),
            "-u", "frr", "-g", "frr",
            "--log", f"file:{rdir / daemon}.log",
        ]  # fmt: skip
        if daemon == "bgpd":
            argv += ["-p", "179"]
        if daemon == "bfdd":
            argv += ["--bfdctl", str(rdir / "bfdd.sock")]  # not /var/run/frr's: labs run side by side
        lab.exec(ns, *argv)
        if daemon == "zebra":
            wait_until((rdir / "zserv.api").exists, 10, what="zebra's socket")


def daemon_part(config: str, daemon: str) -> str:
    """What of a router configuration ``daemon`` gets, as vtysh splits an integrated frr.conf: zebra its
    hostname and its global ``zebra ...`` settings, bfdd the ``bfd`` block, every other daemon the rest.
    A daemon given another's block logs its lines as errors, and reads the block's ``exit`` as leaving
    configuration mode: everything after it would be lost without a word."""
    lines = config.splitlines(keepends=True)
    if daemon == "zebra":
        return "".join(line for line in lines if line.startswith(("hostname ", *ZEBRA_LINES)))
    bfd: list[str] = []
    rest: list[str] = []
    inside = False
    for line in lines:
        inside = inside or line.rstrip() == "bfd"
        (bfd if inside else rest).append(line)
        inside = inside and line.rstrip() != "exit"
    if daemon == "bfdd":
        return "".join(bfd)
    return "".join(line for line in rest if not line.startswith(ZEBRA_LINES))


def router_dir(lab: Lab, node: str | None = None) -> Path:
    """Where a router's FRR keeps its files and sockets: ``router`` for the one router, else the node's name."""
    return lab.workdir / (node or "router")


def vtysh(lab: Lab, command: str, node: str | None = None) -> str:
    return run("vtysh", "--vty_socket", str(router_dir(lab, node)), "-c", command).stdout


def unbound_config(lab: Lab, server: Server, interfaces: list[str] | None = None, health: str = "healthy") -> str:
    """Unbound on ``server``: by default on its admin and service addresses."""
    v4, v6 = SERVICE_V4.split("/")[0], SERVICE_V6.split("/")[0]
    return unbound_text(interfaces or [server.v4, server.v6, v4, v6], server.name, lab.workdir / server.name, health)


def unbound_text(interfaces: list[str], name: str, sdir: Path | str, health: str = "healthy") -> str:
    """An Unbound server ``name`` listening on ``interfaces``, its files in ``sdir``: the health record and
    the whoami record the lab asks for."""
    listen = "".join(f"    interface: {a}\n" for a in interfaces)
    return f"""server:
    verbosity: 1
    num-threads: 1
{listen}    # the service addresses are bound by anycastd, possibly after Unbound starts
    ip-freebind: yes
    do-daemonize: no
    use-syslog: no
    logfile: ""
    chroot: ""
    username: ""
    directory: "{sdir}"
    pidfile: "{sdir}/unbound.pid"
    access-control: 0.0.0.0/0 allow
    access-control: ::/0 allow
    module-config: "iterator"
    do-not-query-localhost: yes
    local-zone: "example." static
    local-data: '{HEALTH_QNAME} 0 IN TXT "{health}"'
    local-data: '{WHOAMI_QNAME} 0 IN TXT "{name}"'
remote-control:
    control-enable: no
"""


def dig(lab: Lab, ns: str, address: str, qname: str = WHOAMI_QNAME, timeout: int = 1) -> str | None:
    """The TXT answer from ``address`` as seen from ``ns``, or None."""
    result = lab.exec(ns, "dig", "+short", f"+time={timeout}", "+tries=1", f"@{address}", qname, "TXT", check=False)
    answer = result.stdout.strip().strip('"')
    return answer if result.returncode == 0 and answer and not answer.startswith(";;") else None


def named_config(lab: Lab, server: Server, zone: Path | None = None) -> str:
    """BIND on ``server``: every address, the service addresses included once anycastd binds them
    (BIND rescans its interfaces when addresses change). The zone is the very file the topology
    binds into the container; only the paths of BIND's own files differ."""
    sdir = lab.workdir / server.name
    zone = zone or lab.topology.node(server.name).bound(ZONE_FILE)
    if zone is None:
        raise RuntimeError(f"{server.name} runs BIND: bind its zone at {ZONE_FILE} in {lab.topology_file}")
    return f"""options {{
    directory "{sdir}";
    pid-file "{sdir}/named.pid";
    session-keyfile "{sdir}/session.key";
    managed-keys-directory "{sdir}";
    listen-on {{ any; }};
    listen-on-v6 {{ any; }};
    recursion no;
    dnssec-validation no;
}};
controls {{ }};
zone "example." {{
    type primary;
    file "{zone}";
}};
"""


def set_health_record(lab: Lab, server: Server, health: str) -> None:
    """Make ``server``'s resolver answer ``health`` to the health check, without a restart: its
    configuration (for BIND, the zone it points at) is rewritten and the resolver reloads it on SIGHUP,
    as a zone pushed by an operator would be. Everything else it answers stays the same."""
    sdir = lab.workdir / server.name
    if server.resolver == "bind":
        original = lab.topology.node(server.name).bound(ZONE_FILE)
        if original is None:
            raise RuntimeError(f"{server.name} runs BIND: bind its zone at {ZONE_FILE} in {lab.topology_file}")
        zone = sdir / f"db.example.{health}"
        zone.write_text(original.read_text().replace('"healthy"', f'"{health}"'))
        zone.chmod(0o644)
        (sdir / "named.conf").write_text(named_config(lab, server, zone=zone))
    else:
        (sdir / "unbound.conf").write_text(unbound_config(lab, server, health=health))
    lab.signal(resolver_key(server), signal.SIGHUP)


def start_resolver(lab: Lab, server: Server, wait: bool = True, config: str | None = None) -> None:
    """The resolver the topology file gives ``server`` (BIND or Unbound), in the foreground; ``config``
    replaces the lab's configuration text (a fault test's broken one)."""
    sdir = lab.workdir / server.name
    sdir.mkdir(exist_ok=True)
    if server.resolver == "bind":
        conf = sdir / "named.conf"
        conf.write_text(config or named_config(lab, server))
        argv = ["named", "-g", "-n", "1", "-c", str(conf)]
    else:
        conf = sdir / "unbound.conf"
        conf.write_text(config or unbound_config(lab, server))
        argv = ["unbound", "-d", "-c", str(conf)]
    lab.spawn(resolver_key(server), lab.ns(server.name), argv, sdir / f"{server.resolver}.log")
    if wait:
        wait_resolver(lab, server)


def wait_resolver(lab: Lab, server: Server) -> None:
    """Wait until ``server``'s resolver answers on its admin address with its own name."""
    wait_until(
        lambda: dig(lab, lab.ns(server.name), server.v4) == server.name,
        10,
        what=f"{server.resolver} on {server.name}",
    )


#: BFD on each of a lab server's sessions, as in containerlab/s*/anycastd.yaml (frr/bgp/frr.conf's profile).
LAB_BFD = "{interval: 0.1, multiplier: 3}"


def anycastd_config(
    lab: Lab,
    server: Server,
    service: str = "",
    failure_action: str = "graceful-shutdown",
    bfd: str | None = LAB_BFD,
    **check: object,
) -> str:
    """The sidecar's configuration on ``server``, as the reference topology's; ``service`` adds YAML lines at
    the service's indent (``damping: false``), ``check`` keys to its check; ``bfd`` is each neighbor's (None:
    no BFD)."""
    assert server.asn is not None, f"{server.name} has no anycastd.yaml in {lab.topology_file}"
    extra = "".join(f"\n        {k}: {v}" for k, v in check.items())
    bfd_line = f"\n    bfd: {bfd}" if bfd is not None else ""
    neighbors = ""
    for mine, theirs in lab.topology.uplinks(server.name):  # one pair of sessions per ToR: dual-homed, two
        for version in (4, 6):
            local = lab.topology.node(server.name).on(mine.interface, version).ip
            peer = lab.topology.node(theirs.node).on(theirs.interface, version).ip
            neighbors += f"""
  - address: {peer}
    peer_asn: {ROUTER_ASN}
    local_address: {local}
    hold_time: 3
    gtsm: true{bfd_line}"""
    return f"""# anycastd on lab server {server.name}
router_id: {server.v4}
local_asn: {server.asn}
runtime_dir: {lab.workdir / server.name / "run"}
state_dir: {lab.workdir / server.name / "state"}
metrics:
  address: {server.v4}
  port: {METRICS_PORT}
neighbors:{neighbors}
services:
  dns:
    prefixes: [{SERVICE_V4}, {SERVICE_V6}]
    interface: lo
    failure_action: {failure_action}
{service}    checks:
      - address: {server.v4}
        qname: {HEALTH_QNAME}
        qtype: TXT
        answer: healthy{extra}
"""


def extra_service(server: Server, name: str, prefixes: list[str], allow_non_host: bool = False) -> str:
    """YAML for one more service on ``server`` (append to anycastd_config): checked on the admin
    address only, since the resolver does not listen on these prefixes."""
    allow = "\n    allow_non_host_prefixes: true" if allow_non_host else ""
    return f"""\
  {name}:
    prefixes: [{", ".join(prefixes)}]{allow}
    interface: lo
    checks:
      - address: {server.v4}
        qname: {HEALTH_QNAME}
        qtype: TXT
        answer: healthy
        probe_service_addresses: false
"""


def anycastd_paths(lab: Lab, server: Server) -> tuple[Path, Path, Path]:
    """The config file, log file and control socket of anycastd on ``server``."""
    sdir = lab.workdir / server.name
    return sdir / "anycastd.yaml", sdir / "anycastd.log", sdir / "run" / "control.sock"


#: Where an installed package's commands are (``/usr/bin``: tests/package runs the lab against the Debian
#: package); unset, the lab runs this checkout's anycastd through the test's own Python.
INSTALLED_BIN = os.environ.get("ANYCASTD_LAB_BIN") or None


def anycastd_command(*args: str) -> list[str]:
    return [f"{INSTALLED_BIN}/anycastd", *args] if INSTALLED_BIN else [sys.executable, "-m", "anycastd", *args]


def anycastctl_command(*args: str) -> list[str]:
    if INSTALLED_BIN:
        return [f"{INSTALLED_BIN}/anycastctl", *args]
    return [sys.executable, "-m", "anycastd.cli.anycastctl", *args]


#: The unprivileged user packaging/systemd runs anycastd as; the lab can run it so too (``user=``).
UNPRIVILEGED_USER = "anycastd"
#: The sidecar's one capability (docs/security.md): the service addresses (netlink) and nftables.
SIDECAR_CAPABILITIES = ("net_admin",)
#: What bfdd needs besides, when a neighbor has BFD (packaging/systemd/anycastd.service.d/bfd.conf).
BFD_CAPABILITIES = ("net_bind_service", "net_raw", "sys_admin")


def ensure_user(name: str = UNPRIVILEGED_USER) -> None:
    """Create the system user anycastd runs as, as docs/operations.md tells operators to, if it is missing."""
    if subprocess.run(["id", "-u", name], check=False, capture_output=True).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )


def as_user(user: str, capabilities: tuple[str, ...]) -> list[str]:
    """The argv prefix that runs a command as ``user`` with ``capabilities`` only, as the systemd unit does:
    ambient and bounding sets both exactly these, no new privileges (setpriv, from util-linux)."""
    caps = ",".join(["-all", *(f"+{c}" for c in capabilities)])
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={user}",
        "--init-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        f"--bounding-set={caps}",
        "--no-new-privs",
        "--",
    ]


def start_anycastd(
    lab: Lab, server: Server, config: str | None = None, user: str | None = None
) -> subprocess.Popen[bytes]:
    """anycastd on ``server``; with ``user``, as that unprivileged user with CAP_NET_ADMIN alone (and what
    bfdd needs, when the configuration has BFD: the unit's drop-in)."""
    sdir = lab.workdir / server.name
    sdir.mkdir(exist_ok=True)
    path, logfile, _ = anycastd_paths(lab, server)
    text = config or anycastd_config(lab, server)
    path.write_text(text)
    argv = anycastd_command("run", "--config", str(path), "--log-level", "debug")
    if user is None:
        # back to root after a run as a user: bfdd runs as root with no capability in effect (FRR lowers them),
        # so it could not reach a runtime directory still owned by that user (systemd gives it to the unit's)
        for sub in (sdir / "run", sdir / "state"):
            if sub.exists():
                subprocess.run(["chown", "-R", "root:", str(sub)], check=True)
    if user is not None:
        ensure_user(user)
        lab.workdir.chmod(0o711)  # mkdtemp's 0700 would keep the user out of its own directory
        for sub in (sdir / "run", sdir / "state"):  # what systemd's RuntimeDirectory= and StateDirectory= give
            sub.mkdir(exist_ok=True)
            subprocess.run(["chown", "-R", f"{user}:", str(sub)], check=True)
        bfd = BFD_CAPABILITIES if parse_config(text).bfd_neighbors else ()
        argv = [*as_user(user, SIDECAR_CAPABILITIES + bfd), *argv]
    return lab.spawn(anycastd_key(server), lab.ns(server.name), argv, logfile)


def anycastctl(lab: Lab, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, run in ``server``'s namespace against its anycastd."""
    _, _, sock = anycastd_paths(lab, server)
    argv = anycastctl_command("--socket", str(sock), *args)
    return lab.exec(lab.ns(server.name), *argv, check=False)


def anycastd_key(server: Server) -> str:
    return f"anycastd-{server.name}"


def resolver_key(server: Server) -> str:
    return f"resolver-{server.name}"


# the router-side variant -----------------------------------------------------------------------------------

ROUTER_KEY = "anycastd-router"


def frr_static_config() -> str:
    """frr/static/frr.conf as users copy it: zebra and staticd, no BGP."""
    return frr_file("static/frr.conf").read_text()


def router_paths(lab: Lab) -> tuple[Path, Path, Path]:
    """The config file, log file and control socket of `anycastd router` on the router."""
    rdir = lab.workdir / "router"
    return rdir / "anycastd-router.yaml", rdir / "anycastd-router.log", rdir / "run" / "control.sock"


def router_config(lab: Lab, resync: float = 1.0, when_all_down: str = "keep") -> str:
    servers = "".join(
        f"\n      - {{name: {s.name}, address: {s.v4}, nexthops: [{s.v4}, '{s.v6}']}}" for s in lab.server_list
    )
    rdir = lab.workdir / "router"
    return f"""# anycastd router on the lab router
router:
  vtysh: [vtysh, --vty_socket, {rdir}]
  resync: {resync}
  when_all_down: {when_all_down}
runtime_dir: {rdir / "run"}
state_dir: {rdir / "state"}
metrics:
  address: {lab.client_gateway}
  port: {METRICS_PORT}
services:
  dns:
    prefixes: [{SERVICE_V4}, {SERVICE_V6}]
    checks:
      - qname: {HEALTH_QNAME}
        qtype: TXT
        answer: healthy
    servers:{servers}
"""


def start_anycastd_router(lab: Lab, config: str | None = None) -> subprocess.Popen[bytes]:
    path, logfile, _ = router_paths(lab)
    path.write_text(config or router_config(lab))
    argv = anycastd_command("router", "--config", str(path), "--log-level", "debug")
    return lab.spawn(ROUTER_KEY, lab.router, argv, logfile)


def anycastctl_router(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI against `anycastd router`, run in the router's namespace."""
    _, _, sock = router_paths(lab)
    argv = anycastctl_command("--socket", str(sock), *args)
    return lab.exec(lab.router, *argv, check=False)
