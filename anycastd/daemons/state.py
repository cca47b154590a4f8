"""Maintenance that survives a restart: who drained what, when and why.

Theory of operation
-------------------
An operator's drain is a promise that this node carries no traffic until the
operator says otherwise, so it must outlive anycastd, a crash and a reboot.
It lives in one small JSON file under the state directory, written
atomically (a temporary file, fsync, rename, fsync of the directory), so a
crash leaves either the old file or the new one, never half of one.

A missing file means no maintenance: that is the state of a fresh install.
A file that cannot be read or parsed is *not* taken to mean "no maintenance":
the operator may have drained this node before it rebooted. anycastd then
keeps every service withdrawn, says why in the log and in `anycastctl
status`, and waits for `anycastctl announce`, which rewrites the file. A
withdrawn node costs capacity; a node announced in the middle of its
maintenance costs queries.

The file is untrusted input like any other: it is read only up to
``MAX_BYTES``, every field is checked (names as in the configuration, short
printable strings, ``since`` a finite time between 1970 and 9999), and a
file that fails any check is *moved aside* (``maintenance.json.bad-<time>``,
kept for the operator to read) rather than left to fail again at every start.
The daemon then saves a new file that withdraws everything, so that a crash or
restart before the operator acts cannot announce a node whose drain was in
the broken file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from anycastd.errors import AnycastdError
from anycastd.untrusted import UntrustedFileError, loads, read_file

FILE_NAME = "maintenance.json"
FORMAT_VERSION = 1
MAX_BYTES = 256 * 1024
MAX_ENTRIES = 4096
MAX_TEXT = 200
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z: the last time a status line can print
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


class StateError(AnycastdError):
    """The persisted maintenance state could not be read or written."""


@dataclass(frozen=True)
class Maintenance:
    reason: str
    who: str
    since: float  # Unix time
    #: `anycastctl withdraw --soft`: the path stays, tagged GRACEFUL_SHUTDOWN, while the probes pass.
    soft: bool = False

    def to_json(self) -> dict[str, Any]:
        """The entry as the maintenance file holds it: ``soft`` only when true, so that a hard drain reads
        the same as before soft drains existed (and an older anycastd still reads the file)."""
        entry: dict[str, Any] = {"reason": self.reason, "who": self.who, "since": self.since}
        if self.soft:
            entry["soft"] = True
        return entry


class MaintenanceStore(Protocol):
    def load(self) -> dict[str, Maintenance]:
        """Every drained name; {} if nothing was ever saved. Raises StateError if unreadable."""
        ...

    def save(self, drained: Mapping[str, Maintenance]) -> None:
        """Replace what is saved, atomically. Raises StateError."""
        ...


class InMemoryStore:
    def __init__(self, drained: Mapping[str, Maintenance] | None = None, broken: str | None = None) -> None:
        self.drained = dict(drained or {})
        self.broken = broken  # when set: load() and save() fail with this message
        self.saves = 0

    def load(self) -> dict[str, Maintenance]:
        if self.broken:
            raise StateError(self.broken)
        return dict(self.drained)

    def save(self, drained: Mapping[str, Maintenance]) -> None:
        if self.broken:
            raise StateError(self.broken)
        self.drained = dict(drained)
        self.saves += 1


def decode(text: str, source: str) -> dict[str, Maintenance]:
    try:
        data = loads(text)
    except ValueError as exc:
        raise StateError(f"{source}: not JSON ({exc})") from None
    except RecursionError:
        raise StateError(f"{source}: not JSON (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise StateError(f"{source}: not a version {FORMAT_VERSION} maintenance file")
    entries = data.get("drained")
    if not isinstance(entries, dict):
        raise StateError(f"{source}: 'drained' must be a mapping")
    if len(entries) > MAX_ENTRIES:
        raise StateError(f"{source}: {len(entries)} entries; more than {MAX_ENTRIES} is not a maintenance file")
    out: dict[str, Maintenance] = {}
    for name, entry in entries.items():
        if not _NAME.match(name):
            raise StateError(f"{source}: {name[:70]!r} is not a service or server name")
        since = entry.get("since") if isinstance(entry, dict) else None
        if not (
            isinstance(entry, dict)
            and set(entry) - {"soft"} == {"reason", "who", "since"}
            and entry.get("soft", True) is True
            and _short(entry["reason"])
            and _short(entry["who"])
            and isinstance(since, int | float)
            and not isinstance(since, bool)
            and math.isfinite(since)
            and 0 <= since <= LATEST
        ):
            raise StateError(
                f"{source}: the entry for {name!r} needs exactly reason and who (printable text, at most "
                f"{MAX_TEXT} characters) and since (a Unix time between 1970 and 9999), and may say soft: true"
            )
        out[name] = Maintenance(entry["reason"], entry["who"], float(since), "soft" in entry)
    return out


def _short(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT and value.isprintable()


def encode(drained: Mapping[str, Maintenance]) -> str:
    body = {"version": FORMAT_VERSION, "drained": {name: m.to_json() for name, m in sorted(drained.items())}}
    return json.dumps(body, indent=2) + "\n"


class FileStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def load(self) -> dict[str, Maintenance]:
        try:
            data = read_file(self.path, MAX_BYTES)
        except UntrustedFileError as exc:
            raise StateError(self._aside(f"{self.path}: {exc}")) from None
        except FileNotFoundError:
            return {}
        except OSError as exc:  # unreadable here and now (permissions, I/O): leave it where it is
            raise StateError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        if len(data) > MAX_BYTES:
            raise StateError(self._aside(f"{self.path}: larger than {MAX_BYTES // 1024} KiB"))
        try:
            return decode(data.decode("utf-8"), str(self.path))
        except UnicodeDecodeError:
            raise StateError(self._aside(f"{self.path}: not UTF-8 text")) from None
        except StateError as exc:
            raise StateError(self._aside(str(exc))) from None

    def _aside(self, problem: str) -> str:
        """Move the broken file out of the way (kept for the operator); the message says where it went."""
        bad = self.path.with_name(f"{FILE_NAME}.bad-{int(time.time())}")
        try:
            os.replace(self.path, bad)
        except OSError as exc:
            return f"{problem} (could not move it aside: {exc.strerror or exc})"
        return f"{problem}; moved aside to {bad}"

    def save(self, drained: Mapping[str, Maintenance]) -> None:
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(encode(drained))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"{self.path}: cannot save the maintenance state: {exc}") from None
