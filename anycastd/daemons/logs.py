"""Where the daemons' log lines go, and how they look there.

Under systemd, stderr is a stream to journald, which stamps every line with its own
time and reads a ``<N>`` prefix as the line's priority (sd-daemon(3)). systemd says
so by setting ``JOURNAL_STREAM`` to the stream's ``device:inode``; when that matches
stderr, each line is ``<N>logger: message`` with no time of ours, and each line of
a multi-line message (a traceback, ExaBGP's last words) carries the priority too.
Anywhere else (a terminal, a file, the lab) lines start with a timestamp and the
level's name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from anycastd.untrusted import whole_number

#: syslog priorities (sd-daemon(3)) by logging level.
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (a custom level takes that of the next standard one below)."""
    for level in sorted(PRIORITIES, reverse=True):
        if levelno >= level:
            return PRIORITIES[level]
    return PRIORITIES[logging.DEBUG]


class JournalFormatter(logging.Formatter):
    """``<N>name: message``, ``<N>`` on every line."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True if ``stream`` is the journal stream systemd named in ``JOURNAL_STREAM`` (device:inode)."""
    device_text, _, inode_text = environ.get("JOURNAL_STREAM", "").partition(":")
    device, inode = whole_number(device_text), whole_number(inode_text)
    if device is None or inode is None:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup(level: str, stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Configure the root logger for a daemon; True if its lines go to the journal."""
    stream = sys.stderr if stream is None else stream
    journal = to_journal(stream, os.environ if environ is None else environ)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(PLAIN))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its debug is a netlink packet trace
    return journal
