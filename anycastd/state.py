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
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from anycastd.errors import AnycastdError

FILE_NAME = "maintenance.json"
FORMAT_VERSION = 1


class StateError(AnycastdError):
    """The persisted maintenance state could not be read or written."""


@dataclass(frozen=True)
class Maintenance:
    reason: str
    who: str
    since: float  # Unix time

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "who": self.who, "since": self.since}


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
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{source}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise StateError(f"{source}: not a version {FORMAT_VERSION} maintenance file")
    entries = data.get("drained")
    if not isinstance(entries, dict):
        raise StateError(f"{source}: 'drained' must be a mapping")
    out: dict[str, Maintenance] = {}
    for name, entry in entries.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("reason"), str)
            and isinstance(entry.get("who"), str)
            and isinstance(entry.get("since"), int | float)
            and not isinstance(entry.get("since"), bool)
        ):
            raise StateError(f"{source}: the entry for {name!r} needs reason, who (strings) and since (a number)")
        out[name] = Maintenance(entry["reason"], entry["who"], float(entry["since"]))
    return out


def encode(drained: Mapping[str, Maintenance]) -> str:
    body = {"version": FORMAT_VERSION, "drained": {name: m.to_json() for name, m in sorted(drained.items())}}
    return json.dumps(body, indent=2) + "\n"


class FileStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def load(self) -> dict[str, Maintenance]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"{self.path}: cannot read: {exc}") from None
        return decode(text, str(self.path))

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
