"""`anycastctl`: talk to a running anycastd.

The control socket (status, withdraw, announce) is not there yet; until it
is, every command says so and exits non-zero rather than pretend.
"""

from __future__ import annotations

import argparse
import sys

from anycastd import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anycastctl", description="control a running anycastd")
    parser.add_argument("--version", action="version", version=f"anycastctl {__version__}")
    parser.add_argument("command", nargs="?", choices=["status", "withdraw", "announce", "check"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    print(
        f"anycastctl: '{args.command}' needs the control socket, which this version does not have yet", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
