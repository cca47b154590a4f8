"""Reading what someone else wrote: files and JSON, bounded, never blocking for good.

Theory of operation
-------------------
Every file anycastd reads (its configuration, the router's, the maintenance
state) is opened by ``read_file`` and every JSON text it decodes (the state
file, control requests and replies, bfdd's and nft's answers) by ``loads``.
Each bounds what it accepts where the class of bug lives, so that a new
reader cannot forget a case:

* A path may name anything: a FIFO nobody writes to (``open`` would block
  forever), a terminal, a device, a directory. ``read_file`` opens with
  O_NONBLOCK and O_NOCTTY, then asks the open file what it is: a regular file
  is read up to its limit; a pipe is read only where the caller allows it
  (``check-config <(generate)``), with a deadline; anything else is refused
  with what it is.
* A number can be any length: ``1`` followed by 400 zeros is a valid JSON
  number, or environment variable, and converting it to a float raises
  OverflowError, which no decoder expects.
  ``loads`` refuses an integer of more than ``MAX_DIGITS`` digits and a
  float that is not finite (``1e400``, ``NaN``, ``Infinity``) as it parses:
  nothing anycastd reads (a time, a count, a port, an interval) needs more.
  ``whole_number`` does the same for a number in an environment variable.
"""

from __future__ import annotations

import json
import math
import os
import select
import stat
import time
from pathlib import Path
from typing import Any

#: The most digits an integer in JSON anycastd reads may have: more than any time, count or port needs.
MAX_DIGITS = 20
#: How long a pipe given as a file may take to deliver all it has (then: an error saying so).
PIPE_DEADLINE = 5.0


class UntrustedFileError(ValueError):
    """The path names something that is not a readable file of the kind asked for; the message says what."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_file(path: str | Path, limit: int, *, pipes: bool = False, deadline: float = PIPE_DEADLINE) -> bytes:
    """At most ``limit + 1`` bytes of ``path`` (one more than allowed tells the caller it is too large).

    A regular file is read; a pipe or FIFO too if ``pipes``, until its writer closes it, within
    ``deadline`` seconds. Raises FileNotFoundError or another OSError where the file cannot be
    opened or read, and UntrustedFileError for anything else, never blocking for good."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return _read_all(fd, limit)
        if stat.S_ISFIFO(mode) and pipes:
            return _read_pipe(fd, limit, deadline)
        raise UntrustedFileError(f"{_kind(mode)}, not a regular file")
    finally:
        os.close(fd)


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_pipe(fd: int, limit: int, deadline: float) -> bytes:
    """A pipe's bytes until its writer closes it. A FIFO that no process has open for writing reads as
    empty at once (O_NONBLOCK); one whose writer neither writes nor closes times out."""
    chunks: list[bytes] = []
    size = 0
    end = time.monotonic() + deadline
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while size <= limit:
        try:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        except BlockingIOError:  # a writer, nothing written yet: wait for it, within the deadline
            left = end - time.monotonic()
            if left <= 0:
                raise UntrustedFileError(f"a pipe whose writer did not finish within {deadline:g} s") from None
            poller.poll(left * 1000)
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def whole_number(text: str) -> int | None:
    """``text`` as a whole number of at most MAX_DIGITS ASCII digits (the environment's WATCHDOG_USEC,
    JOURNAL_STREAM), or None. ``str.isdigit`` alone lets '²' through, which ``int`` then refuses."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    return None


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise ValueError(f"an integer of {digits} digits (at most {MAX_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:30]} is too large for a number")
    return value


def _constant(text: str) -> float:
    raise ValueError(f"{text} is not a number")


def loads(text: str | bytes) -> Any:
    """``json.loads``, with numbers bounded (see the module's docstring): ValueError otherwise, as for any
    text that is not JSON; RecursionError for nesting too deep, as json.loads."""
    return json.loads(text, parse_int=_integer, parse_float=_float, parse_constant=_constant)
