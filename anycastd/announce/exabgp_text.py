"""ExaBGP's text API as anycastd speaks it: the commands, the events, the log lines. Pure: no I/O.

Theory of operation
-------------------
anycastd holds the *desired* routes; an ExaBGP holds what it has acknowledged (``sent``). The
commands that take one to the other are ``route_changes``: withdrawals first, then each
prefix whose attributes differ announced again (an announcement with other attributes
replaces the path, an implicit withdrawal: RFC 4271 3.1). Each is addressed to the
neighbors of the prefix's family alone, and to none that BFD's flap damping holds back
(``hold_commands`` says what holding and releasing one neighbor sends). Every word that
reaches ExaBGP is built here from validated values (``route_words``: numbers and ':' only),
so nothing in anycastd's configuration can become a command of its own.

What ExaBGP writes back is one of: an acknowledgement (``done``/``error``), a neighbor's
session event, or anything else (logged at debug). ExaBGP's own log lines are relayed at
the level they deserve (``relay``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from anycastd.announce import notification
from anycastd.core.attributes import PLAIN, RouteAttributes
from anycastd.core.net import IPAddress, IPNetwork
from anycastd.core.syntax import MAX_PREPEND, community, large_community, link_bandwidth

#: An API comment: ExaBGP acknowledges it ("done") and does nothing else, so an answer proves its reactor runs.
HEARTBEAT_COMMAND = "# anycastd heartbeat"
#: The session states ExaBGP reports for a neighbor.
SESSION_STATES = ("up", "down", "connected")


def route_words(attributes: RouteAttributes, local_asn: int) -> str:
    """The attributes as words of ExaBGP's ``announce route`` command, each value checked again
    (quoted by construction: only numbers and ':' reach the API). Raises ValueError.

    An eBGP path starts with the local AS (ExaBGP adds it when no AS path is given); a prepend
    gives that AS ``1 + as_path_prepend`` times."""
    words = ""
    if attributes.med is not None:
        if not 0 <= attributes.med <= 4294967295:
            raise ValueError(f"MED must be between 0 and 4294967295, got {attributes.med}")
        words += f" med {int(attributes.med)}"
    if attributes.communities:
        words += f" community [{' '.join(community(c) for c in attributes.communities)}]"
    if attributes.large_communities:
        words += f" large-community [{' '.join(large_community(c) for c in attributes.large_communities)}]"
    if attributes.weight is not None:
        words += f" extended-community [{link_bandwidth(local_asn, attributes.weight)}]"
    if attributes.as_path_prepend:
        if not 0 < attributes.as_path_prepend <= MAX_PREPEND:
            raise ValueError(f"as_path_prepend must be between 0 and {MAX_PREPEND}, got {attributes.as_path_prepend}")
        words += f" as-path [{' '.join([str(int(local_asn))] * (1 + attributes.as_path_prepend))}]"
    return words


#: At most this many prefixes in one command (ExaBGP reads an API line of up to 1 MiB; 200 IPv6 prefixes are
#: about 8 kB).
MAX_NLRI = 200


def route_command(neighbor: IPAddress, verb: str, prefix: IPNetwork, tail: str = "") -> str:
    return f"neighbor {neighbor} {verb} route {prefix} next-hop self{tail}"


def batch_commands(neighbor: IPAddress, verb: str, prefixes: Sequence[IPNetwork], tail: str = "") -> list[str]:
    """``verb`` ("announce" or "withdraw") of ``prefixes`` (of ``neighbor``'s family, with the same attribute
    words ``tail``) to ``neighbor``: one ``route`` command for a single prefix, else ExaBGP's multi-NLRI
    ``attributes ... nlri`` commands of up to MAX_NLRI prefixes each, so that a hundred addresses are one
    command and one UPDATE, not a hundred."""
    if len(prefixes) == 1:
        return [route_command(neighbor, verb, prefixes[0], tail)]
    chunks = [" ".join(map(str, prefixes[i : i + MAX_NLRI])) for i in range(0, len(prefixes), MAX_NLRI)]
    return [f"neighbor {neighbor} {verb} attributes next-hop self{tail} nlri {chunk}" for chunk in chunks]


@dataclass(frozen=True)
class RouteChange:
    """One prefix announced (with ``attributes``) or withdrawn: a command for each neighbor it concerns."""

    verb: str  # "announce" or "withdraw"
    prefix: IPNetwork
    attributes: RouteAttributes
    commands: tuple[str, ...]
    tail: str  # the attribute words, for the log

    @property
    def announced(self) -> bool:
        return self.verb == "announce"

    def __str__(self) -> str:
        return f"{'announced' if self.announced else 'withdrew'} {self.prefix}{self.tail}"


def route_changes(
    sent: Mapping[IPNetwork, RouteAttributes],
    want: Mapping[IPNetwork, RouteAttributes],
    neighbors: Sequence[IPAddress],
    held: Collection[str],
    local_asn: int,
) -> list[RouteChange]:
    """What turns ``sent`` (what an ExaBGP has acknowledged) into ``want``: withdrawals, then announcements."""
    changes = [("withdraw", p, PLAIN) for p in sorted(sent.keys() - want.keys(), key=str)]
    changes += [("announce", p, want[p]) for p in sorted(want, key=str) if sent.get(p) != want[p]]
    out = []
    for verb, prefix, attributes in changes:
        tail = route_words(attributes, local_asn) if verb == "announce" else ""
        commands = tuple(
            route_command(n, verb, prefix, tail)
            for n in neighbors
            if n.version == prefix.version and str(n) not in held  # a held neighbor had its withdrawals
        )
        out.append(RouteChange(verb, prefix, attributes, commands, tail))
    return out


def batched(
    changes: Sequence[RouteChange], neighbors: Sequence[IPAddress], held: Collection[str]
) -> list[tuple[list[str], list[RouteChange]]]:
    """``changes`` as batches: the changes of one verb and the same attributes together (withdrawals first,
    as ``route_changes`` orders them), each with the commands that carry it to every neighbor it concerns."""
    groups: dict[tuple[str, str], list[RouteChange]] = {}
    for change in changes:
        groups.setdefault((change.verb, change.tail), []).append(change)
    out = []
    for (verb, tail), group in groups.items():
        commands = []
        for n in neighbors:
            if str(n) in held:
                continue  # a held neighbor had its withdrawals
            mine = [c.prefix for c in group if c.prefix.version == n.version]
            if mine:
                commands += batch_commands(n, verb, mine, tail)
        out.append((commands, group))
    return out


def hold_commands(
    sent: Mapping[IPNetwork, RouteAttributes], neighbor: IPAddress, held: bool, local_asn: int
) -> list[str]:
    """Holding ``neighbor`` back withdraws from it alone every prefix sent; releasing it announces them again
    (in batches of the same attributes)."""
    groups: dict[str, list[IPNetwork]] = {}
    for prefix, attributes in sorted(sent.items(), key=lambda item: str(item[0])):
        if prefix.version == neighbor.version:
            groups.setdefault("" if held else route_words(attributes, local_asn), []).append(prefix)
    verb = "withdraw" if held else "announce"
    return [command for tail, prefixes in groups.items() for command in batch_commands(neighbor, verb, prefixes, tail)]


@dataclass(frozen=True)
class Ack:
    """ExaBGP's answer to the oldest command it has not answered: ``done`` (True) or ``error``."""

    ok: bool


@dataclass(frozen=True)
class SessionEvent:
    neighbor: str
    state: str  # one of SESSION_STATES
    detail: str  # the NOTIFICATION decoded, or ""

    def __str__(self) -> str:
        return f" ({self.detail})" if self.detail else ""


def parse_event(line: str) -> Ack | SessionEvent | None:
    """One line from ExaBGP's helper; None for anything that is neither an answer nor a session event."""
    if line in ("done", "error"):
        return Ack(line == "done")
    words = line.split(None, 3)
    if len(words) >= 3 and words[0] == "neighbor" and words[2] in SESSION_STATES:
        return SessionEvent(words[1], words[2], notification.decoded(words[3]) if len(words) > 3 else "")
    return None


#: ExaBGP's levels (anycastd.announce.exabgp_run writes them first on each line) as anycastd logs them:
#: its warnings and errors as such, the rest (its INFO is chatter: every route it sends) at DEBUG.
EXABGP_LEVELS = {
    "FATAL": logging.ERROR,
    "CRITICAL": logging.ERROR,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
}
#: ExaBGP's categories that are never a problem: "advice" says its environment file is missing,
#: at ERROR, every start (anycastd passes its settings in the environment instead).
QUIET_SOURCES = frozenset({"advice", "welcome"})


def relay(line: str) -> tuple[int, str, str]:
    """How one line of ExaBGP's log is logged: (level, "%s", the line without its level word)."""
    level, _, rest = line.partition(" ")
    if level not in EXABGP_LEVELS and level not in ("INFO", "DEBUG"):
        return logging.DEBUG, "%s", line  # a custom exabgp.command: no level to read
    source = rest.split(None, 1)[0] if rest.strip() else ""
    if source in QUIET_SOURCES:
        return logging.DEBUG, "%s", rest
    return EXABGP_LEVELS.get(level, logging.DEBUG), "%s", notification.decoded(rest)
