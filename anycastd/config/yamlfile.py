"""Reading an untrusted YAML file into plain values that remember where they came from.

Theory of operation
-------------------
A configuration file is written by a person and may be wrong in any way, or
written by someone who means harm, so reading it is bounded before anything
is interpreted:

* **Size.** At most ``MAX_BYTES`` are read; a longer file is refused unread.
  The bytes must be UTF-8; a bad byte is reported with its line and column.
* **Shape.** The text is *composed* into PyYAML nodes, never constructed
  into Python objects by PyYAML: no tag can reach a constructor. Nesting
  deeper than ``MAX_DEPTH`` is refused while composing (so a deep file
  cannot exhaust the stack), and so is any explicit tag (``!!python/...``,
  ``!!int``, ``!custom``): the file holds plain maps, lists, strings,
  numbers, booleans and nulls, and nothing else.
* **Expansion.** Anchors and aliases are allowed (they name a block once and
  reuse it), but every value reached through them is counted, and a file
  that expands to more than ``MAX_VALUES`` values is refused: an "alias
  bomb" costs a few milliseconds, not gigabytes.
* **Merge keys** (``<<: *base``) are refused with a message: YAML 1.2
  dropped them, and a merge silently hides which value wins.
* **Duplicate keys** are refused, and keys must be strings.
* **Scalars** are read by this module: a number too large to convert is a
  problem at its line, not an OverflowError; YAML 1.1's timestamps and
  ``=`` stay strings.

``Reader.value`` returns the plain value tree and records a location
(``line``, ``column``) for every key path (``services.dns.checks[0].timeout``),
so each problem is reported as ``file:line:column: key.path: what to fix``.
Problems are collected, not raised one by one, so an operator fixes a file
in one round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from anycastd import DOC_DIR
from anycastd.errors import ConfigError
from anycastd.untrusted import UntrustedFileError, read_file

#: The largest configuration file read; the biggest real one (64 servers) is about 10 KiB.
MAX_BYTES = 1024 * 1024
#: The deepest nesting of maps and lists; anycastd's schema needs 5.
MAX_DEPTH = 32
#: The most values a file may expand to, aliases included.
MAX_VALUES = 100_000

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",  # implicit only (explicit tags are refused): read as a string
    "tag:yaml.org,2002:value",  # YAML 1.1's "=": read as a string
}
MERGE_TAG = "tag:yaml.org,2002:merge"

Location = tuple[int, int]  # line, column: both counted from 1


class _Refused(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.location: Location = (mark.line + 1, mark.column + 1)


class _Composer(yaml.SafeLoader):
    """PyYAML's safe composer with a depth limit, and no explicit tags."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            raise _Refused(
                event.start_mark, f"YAML tags such as {tag!r} are not accepted; write the plain value without a tag"
            )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_text(path: str | Path) -> str:
    """The file's text, at most MAX_BYTES of UTF-8; ConfigError (with a line and column) otherwise."""
    p = Path(path)
    try:
        # a pipe too (`check-config <(generate)`), within a deadline; a FIFO nobody writes to reads as empty
        data = read_file(p, MAX_BYTES, pipes=True)
    except UntrustedFileError as exc:
        raise ConfigError([f"{p}: cannot be the configuration: it is {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the configuration: {exc.strerror or exc}"]) from None
    if len(data) > MAX_BYTES:
        raise ConfigError([f"{p}: larger than {MAX_BYTES // 1024} KiB; this is not an anycastd configuration"])
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line, column = _position(data[: exc.start].decode())  # what precedes the first bad byte is good UTF-8
        raise ConfigError(
            [f"{p}:{line}:{column}: the configuration is not UTF-8 text: {exc.reason} (byte {data[exc.start]:#04x})"]
        ) from None


def _position(before: str) -> Location:
    line = before.count("\n") + 1
    return line, len(before) - (before.rfind("\n") + 1) + 1


T = TypeVar("T")
MISSING: Any = object()


class Reader:
    """Turns composed YAML nodes into plain values, remembering where each key path is."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.locations: dict[str, Location] = {}
        self.problems: list[str] = []
        self._values = 0
        self._scalars = yaml.SafeLoader("")

    # problems -------------------------------------------------------------

    def problem(self, path: str, message: str) -> None:
        where = self.source
        location = self._location(path)
        if location is not None:
            where = f"{self.source}:{location[0]}:{location[1]}"
        self.problems.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def _location(self, path: str) -> Location | None:
        while path:
            if path in self.locations:
                return self.locations[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.locations.get("")

    def fail(self) -> ConfigError:
        return ConfigError(self.problems)

    # reading --------------------------------------------------------------

    def document(self, text: str) -> Any:
        """The file's one document as plain values; ConfigError if it is not readable YAML at all."""
        try:
            node = _Composer(text).get_single_node()
        except _Refused as exc:
            raise ConfigError([f"{self.source}:{exc.location[0]}:{exc.location[1]}: {exc}"]) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{self.source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else self.source
            raise ConfigError([f"{where}: not valid YAML: {exc.problem or exc.context}"]) from None
        except yaml.reader.ReaderError as exc:
            line, column = _position(text[: exc.position])
            code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
            raise ConfigError(
                [f"{self.source}:{line}:{column}: a character YAML does not allow ({code:#x}); remove it"]
            ) from None
        except yaml.YAMLError as exc:  # pragma: no cover (every YAMLError PyYAML raises is one of the above)
            raise ConfigError([f"{self.source}: not valid YAML: {exc}"]) from None
        if node is None:
            where = f"{DOC_DIR}/examples/ (examples/ in the source)"
            raise ConfigError([f"{self.source}:1:1: the file is empty; start from an example in {where}"])
        try:
            return self.value(node, "", 0)
        except _Refused as exc:
            raise ConfigError([f"{self.source}:{exc.location[0]}:{exc.location[1]}: {exc}"]) from None

    def value(self, node: yaml.Node, path: str, depth: int) -> Any:
        self._values += 1
        if self._values > MAX_VALUES:
            raise _Refused(node.start_mark, f"expands to more than {MAX_VALUES} values (through anchors and aliases?)")
        if depth > MAX_DEPTH:  # only reachable through an alias that contains itself
            raise _Refused(node.start_mark, "an alias refers to a value that contains it")
        self.locations.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                raise _Refused(
                    key_node.start_mark,
                    "merge keys (<<) are not accepted (YAML 1.2 dropped them); write the keys out, "
                    "or give a whole value an anchor (&name) and reuse it (*name)",
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(key_node.start_mark, "keys must be strings, not maps or lists")
            key = self._scalar(key_node, path)
            child = f"{path}.{key}" if path else str(key)
            location = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, str):
                self.locations[child] = location
                self.problem(child, f"keys must be strings, got {key!r}")
                continue
            if key in out:
                self.locations[child] = location
                what = f"service {key!r} is defined twice" if path == "services" else "duplicate key"
                self.problem(child, f"{what} (each name may appear once)")
                continue
            out[key] = self.value(value_node, child, depth + 1)
            self.locations[child] = location  # the key's place, not its value's
        return out

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        if node.tag not in _PLAIN_TAGS:
            raise _Refused(node.start_mark, f"a value of type {node.tag!r} is not accepted here")
        if node.tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"):
            return str(node.value)
        try:
            return self._scalars.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError):
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
            shown = repr(node.value[:40])
            self.problems.append(f"{self.source}:{line}:{column}: {path or 'value'}: {shown} is not a number")
            return None

    # typed access ---------------------------------------------------------

    def mapping(self, data: Any, path: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.problem(path, f"must be a mapping, got {kind(data)}")
            return None
        for key in sorted(set(data) - allowed):
            self.problem(
                f"{path}.{key}" if path else key, f"unknown key (expected one of: {', '.join(sorted(allowed))})"
            )
        return data

    def items(self, data: dict[str, Any], path: str, key: str, what: str) -> list[tuple[str, Any]]:
        """The elements of the required, non-empty list ``key``, each with its own path."""
        child = f"{path}.{key}" if path else key
        if key not in data:
            self.problem(path, f"missing required key '{key}'")
            return []
        value = data[key]
        if not isinstance(value, list) or not value:
            self.problem(child, f"must be a non-empty list of {what}, got {kind(value)}")
            return []
        return [(f"{child}[{i}]", raw) for i, raw in enumerate(value)]

    def field(
        self,
        data: dict[str, Any],
        path: str,
        key: str,
        convert: Callable[[Any], T],
        default: Any = MISSING,
    ) -> T | None:
        child = f"{path}.{key}" if path else key
        if key not in data:
            if default is MISSING:
                self.problem(path, f"missing required key '{key}'")
                return None
            return default  # type: ignore[no-any-return]
        try:
            return convert(data[key])
        except (ValueError, TypeError) as exc:
            self.problem(child, str(exc))
            return None


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


# converters shared by both schemas ---------------------------------------------------------------------------


def whole(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {shown(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {shown(value)}")
        return value

    return convert


def seconds(lo_exclusive: float, hi: float, zero_ok: bool = False) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of seconds, got {shown(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number of seconds, got {value}")
        if zero_ok and value < 0:
            raise ValueError(f"must be >= 0, got {shown(value)}")
        if value <= lo_exclusive and not (zero_ok and value == 0):
            raise ValueError(f"must be > {lo_exclusive:g}, got {shown(value)}")
        if value > hi:
            raise ValueError(f"must be at most {hi:g} seconds, got {shown(value)}")
        return float(value)

    return convert


def milliseconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"must be a number of milliseconds, got {shown(value)}")
    if not 0 < value <= 60_000:
        raise ValueError(f"must be above 0 and at most 60000 ms, got {shown(value)}")
    return float(value)


def shown(value: Any) -> str:
    """A value for an error message: at most 60 characters of it."""
    if isinstance(value, float):
        out = f"{value:g}"
    elif isinstance(value, int) and not isinstance(value, bool):
        out = str(value) if value.bit_length() < 200 else "a number of more than 60 digits"
    else:
        out = repr(value)
    return out if len(out) <= 60 else out[:57] + "..."


def text(value: Any) -> str:
    """A non-empty string of printable characters (no newline, tab or other control character)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {shown(value)}")
    if not value.isprintable():  # control characters, newlines and line separators included
        raise ValueError(f"must be printable text without control characters, got {shown(value)}")
    return value


def absolute_path(value: Any) -> Path:
    path = Path(text(value))
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {shown(value)}")
    if len(str(path)) > 4000:
        raise ValueError("is longer than 4000 characters")
    return path
