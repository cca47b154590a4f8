#!/usr/bin/env python3
"""Shell completion (bash, zsh) and man pages for `anycastd` and `anycastctl`, from their argument parsers.

    python scripts/cli_files.py [OUTDIR]     # default: packaging/

Writes OUTDIR/completion/{anycastd,anycastctl}.bash, OUTDIR/completion/_{anycastd,anycastctl} (zsh)
and OUTDIR/man/{anycastd,anycastctl}.1. `make cli-files` runs it; the files are committed, the wheel
and `make install-cli-files` install them, and tests/unit/test_packaging.py fails if they are stale.
The man pages carry the version, not a date, so that the same parsers always give the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

from anycastd import __version__
from anycastd.cli import anycastctl, anycastd

SUMMARIES = {
    "anycastd": "announce a DNS service address while the local resolver answers (sidecar or router)",
    "anycastctl": "drain, restore, probe and inspect a running anycastd",
}
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "anycastd": anycastd._parser,
    "anycastctl": anycastctl._parser,
}


def render(name: str) -> dict[str, str]:
    """The files for one command, by path relative to OUTDIR."""
    parser = PARSERS[name]()
    parser.prog = name
    page = Manpage(
        parser,
        _data={
            "date": f"version {__version__}",
            "project_name": f"anycastd {__version__}",
            "manual_title": "anycastd manual",
            "description": SUMMARIES[name],
            "url": "docs/operations.md",
        },
    )
    return {
        f"completion/{name}.bash": shtab.complete(parser, shell="bash"),  # noqa: S604 (a shell name, not a shell)
        f"completion/_{name}": shtab.complete(parser, shell="zsh"),  # noqa: S604
        f"man/{name}.1": str(page),
    }


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "packaging"
    for name in PARSERS:
        for relative, text in render(name).items():
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text if text.endswith("\n") else text + "\n")
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
