"""`anycastd`: run the sidecar, or check a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from anycastd import __version__
from anycastd.address import NetlinkAddresses
from anycastd.announce.exabgp import ExaBGPAnnouncer
from anycastd.checks.dns import DnsProber
from anycastd.config import Config, load
from anycastd.errors import AnycastdError, ConfigError
from anycastd.sidecar import Liveness, Sidecar

log = logging.getLogger("anycastd")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anycastd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"anycastd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="announce the service addresses while the local resolver is healthy")
    run.add_argument("--config", "-c", default="/etc/anycastd/anycastd.yaml", help="configuration file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    return parser


def _load(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing was changed", file=sys.stderr)
        return None


async def _run(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP: reloading is not supported yet; ignored"))
    liveness = Liveness()
    announcer = ExaBGPAnnouncer(config, alive=liveness)
    sidecar = Sidecar(config, announcer, NetlinkAddresses(), DnsProber(), liveness)
    await sidecar.run(stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        config = _load(args.file)
        if config is None:
            return EXIT_ERROR
        print(f"{args.file}: OK ({len(config.services)} service(s), {len(config.neighbors)} neighbor(s))")
        return EXIT_OK
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its debug is a netlink packet trace
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    try:
        asyncio.run(_run(config))
    except AnycastdError as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
