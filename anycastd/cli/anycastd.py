"""`anycastd`: run the sidecar (`run`) or the router-side prober (`router`), or check a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from anycastd import __version__
from anycastd.announce import frr_policy
from anycastd.announce.bfdd import Bfdd
from anycastd.announce.bfdd_text import SESSION_STATES
from anycastd.announce.exabgp import ExaBGPAnnouncer
from anycastd.announce.flaps import SessionDamping, SessionFlaps
from anycastd.announce.frr import VtyRoutes, VtyshRoutes
from anycastd.announce.return_path import NetlinkRoutes, ReturnPath
from anycastd.checks.probers import Probers
from anycastd.config.router import RouterConfig, load_router
from anycastd.config.sidecar import Config, load
from anycastd.control.server import ControlServer
from anycastd.daemons import logs
from anycastd.daemons.engine import ProbeEngine
from anycastd.daemons.metrics import Metrics, RouterMetrics
from anycastd.daemons.offloop import OffLoopReader
from anycastd.daemons.router import Router
from anycastd.daemons.sdnotify import Notifier, supervise
from anycastd.daemons.sidecar import Sidecar
from anycastd.daemons.skeleton import Liveness
from anycastd.daemons.state import FileStore
from anycastd.errors import AnycastdError, ConfigError
from anycastd.untrusted import UntrustedFileError, read_file
from anycastd.watch.address import NetlinkAddresses
from anycastd.watch.fib import NetlinkFib
from anycastd.watch.nft_meter import NftablesMeter
from anycastd.watch.triggers import SocketWatch

log = logging.getLogger("anycastd")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anycastd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"anycastd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="announce the service addresses while the local resolver is healthy")
    run.add_argument("--config", "-c", default="/etc/anycastd/anycastd.yaml", help="configuration file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    router = sub.add_parser("router", help="on a router with FRR: keep static routes via each healthy server")
    router.add_argument("--config", "-c", default="/etc/anycastd/router.yaml", help="configuration file")
    router.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--router", action="store_true", help="the file is an `anycastd router` configuration")
    check.add_argument("file")
    policy = sub.add_parser(
        "frr-policy",
        help="print FRR's import policy for the servers: each may announce only its own service prefixes",
    )
    policy.add_argument("servers", nargs="+", metavar="NAME=FILE", help="a server's name and its anycastd.yaml")
    where = policy.add_mutually_exclusive_group()
    where.add_argument("--write", metavar="FRR_CONF", help="replace the policy block in this frr.conf")
    where.add_argument("--check", metavar="FRR_CONF", help="exit 1 if this frr.conf's policy block differs")
    return parser


def _load(path: str, loader: Callable[[str], T]) -> T | None:
    try:
        return loader(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing was changed", file=sys.stderr)
        return None


async def _reload(sidecar: Sidecar, path: str, reader: OffLoopReader[Config]) -> None:
    """SIGHUP: the same validation as check-config, off the event loop; on any problem the running
    configuration stays."""
    log.info("SIGHUP: reloading %s", path)
    try:
        await sidecar.reload(await reader.read(path))
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("reload refused: %d problem(s); the running configuration stays as it was", len(exc.problems))


async def _run(config: Config, path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    liveness = Liveness()
    metrics = Metrics()
    announcer = ExaBGPAnnouncer(config, alive=liveness)
    bfd = None
    flaps = None
    return_path = None
    if config.return_path is not None:
        return_path = ReturnPath(
            config.return_path,
            config.neighbors,
            announcer.sessions,
            lambda: bfd.session_states() if bfd is not None else {},
            NetlinkRoutes(),
        )
        announcer.on_session_change = return_path.wake
    if config.bfd_neighbors:
        metrics.declare_bfd([str(n.address) for n in config.bfd_neighbors], SESSION_STATES)

        damped = (str(n.address) for n in config.bfd_neighbors if n.bfd is not None and n.bfd.damping)
        flaps = SessionFlaps(SessionDamping(damped), announcer.hold)

        def on_bfd_change(neighbor: str, state: str) -> None:
            metrics.bfd_transition(neighbor, state)
            flaps.observe(neighbor, state)
            if return_path is not None:
                return_path.wake()

        bfd = Bfdd(config, on_change=on_bfd_change, flaps=flaps.describe)
    prober = Probers()
    sidecar = Sidecar(
        config,
        announcer,
        NetlinkAddresses(),
        prober,
        liveness,
        store=FileStore(config.state_dir),
        meter=NftablesMeter(),
        metrics=metrics,
        triggers=SocketWatch(time.monotonic),
        bfd=bfd,
        return_path=return_path,
        flaps=flaps,
    )
    reloads: set[asyncio.Task[None]] = set()
    reader: OffLoopReader[Config] = OffLoopReader("sidecar")

    def on_hup() -> None:
        task = asyncio.ensure_future(_reload(sidecar, path, reader))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    settling = asyncio.create_task(flaps.run(), name="BFD flap damping") if flaps is not None else None
    try:
        await _serve(config, sidecar, metrics, lambda: sidecar.run(stop), stop=stop, stopping=SIDECAR_STOPPING)
    finally:
        if settling is not None:
            settling.cancel()
            await asyncio.gather(settling, return_exceptions=True)
        loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*reloads, return_exceptions=True)
        await prober.aclose()


async def _serve(
    config: Config | RouterConfig,
    daemon: Sidecar | Router,
    metrics: Metrics | RouterMetrics,
    run: Callable[[], Awaitable[None]],
    *,
    stop: asyncio.Event,
    stopping: str,
) -> None:
    """Run ``run()`` with the control socket, the metrics endpoint (if configured) and systemd's notify
    protocol (under `Type=notify`) up; close them after."""
    control = ControlServer(config.control_socket, daemon, config.control.group)
    await control.start()
    notifier = Notifier()
    supervisor = asyncio.create_task(supervise(notifier, daemon, stop, stopping), name="systemd")
    try:
        if config.metrics is not None:
            metrics.serve(config.metrics.address, config.metrics.port)
        await run()
    finally:
        if not supervisor.done():
            supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        notifier.close()
        await control.close()
        metrics.close()


async def _run_router(config: RouterConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP,
        lambda: log.warning("SIGHUP: anycastd router does not reload; restart it (the routes stay as they are)"),
    )
    metrics = RouterMetrics()
    prober = Probers()
    routes = VtyRoutes(config.vtysh) if config.vtysh.session == "vty" else VtyshRoutes(config.vtysh)
    router = Router(
        config,
        routes,
        prober,
        store=FileStore(config.state_dir),
        metrics=metrics,
        fib=NetlinkFib(),
        engine=ProbeEngine,
    )
    try:
        await _serve(config, router, metrics, lambda: router.run(stop), stop=stop, stopping=ROUTER_STOPPING)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await prober.aclose()
        if isinstance(routes, VtyRoutes):
            routes.close()


SIDECAR_STOPPING = "stopping: withdrawing every route, waiting for the queries to stop"
ROUTER_STOPPING = "stopping: FRR keeps the routes as they are"


def _check_config(args: argparse.Namespace) -> int:
    if args.router:
        router = _load(args.file, load_router)
        if router is None:
            return EXIT_ERROR
        servers = len(router.server_names)
        print(f"{args.file}: OK ({len(router.services)} service(s), {servers} server(s); router)")
        return EXIT_OK
    config = _load(args.file, load)
    if config is None:
        return EXIT_ERROR
    print(f"{args.file}: OK ({len(config.services)} service(s), {len(config.neighbors)} neighbor(s))")
    return EXIT_OK


#: The largest frr.conf `frr-policy` reads: a router's whole configuration, with room.
MAX_FRR_CONF = 16 << 20


def _frr_policy(args: argparse.Namespace) -> int:
    servers = []
    for item in args.servers:
        name, _, path = item.partition("=")
        config = _load(path, load) if path else None
        if config is None:
            if not path:
                print(f"{item}: give NAME=FILE, e.g. s1=/etc/anycastd/s1.yaml", file=sys.stderr)
            return EXIT_ERROR
        servers.append(frr_policy.ServerFile(name, path, config))
    try:
        block = frr_policy.render(servers)
        if args.write or args.check:
            conf_path = Path(args.write or args.check)
            data = read_file(conf_path, MAX_FRR_CONF)
            if len(data) > MAX_FRR_CONF:
                raise ValueError(f"{conf_path}: larger than {MAX_FRR_CONF >> 20} MiB; not an frr.conf")
            conf = data.decode()
            if args.check:
                same = frr_policy.extract(conf) == block
                print(f"{conf_path}: the policy block is {'up to date' if same else 'out of date: run --write'}")
                return EXIT_OK if same else EXIT_ERROR
            conf_path.write_text(frr_policy.splice(conf, block))
            print(f"{conf_path}: policy block written for {len(servers)} server(s)")
        else:
            print(block, end="")
    except UntrustedFileError as exc:
        print(f"anycastd frr-policy: {args.write or args.check}: it is {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError) as exc:
        print(f"anycastd frr-policy: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "frr-policy":
        return _frr_policy(args)
    logs.setup(args.log_level)
    if args.command == "router":
        router = _load(args.config, load_router)
        if router is None:
            return EXIT_ERROR
        runner: Coroutine[Any, Any, None] = _run_router(router)
    else:
        config = _load(args.config, load)
        if config is None:
            return EXIT_ERROR
        runner = _run(config, args.config)
    try:
        asyncio.run(runner)
    except AnycastdError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
