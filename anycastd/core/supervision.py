"""The life of a supervised child process (ExaBGP, bfdd) as status and metrics show it.

Theory of operation
-------------------
A child is ``starting`` from its start until it first answers anycastd's liveness question
(ExaBGP: a heartbeat command through its API; bfdd: a VTY command), then ``up``. A question
left unanswered for two periods makes it ``unresponsive``; one left unanswered past the
bound gets it killed. Once it has exited (killed, crashed, or failed to start) it is
``restarting`` until the next one runs, and ``stopped`` when anycastd stops it for good.

Every move is in ``TRANSITIONS``; any other is a bug, and raises with the state unchanged.
The supervisor (anycastd.announce.exabgp, anycastd.announce.bfdd) owns the clock and the
process; this module only says which moves exist.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class ChildState(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    UNRESPONSIVE = "unresponsive"
    RESTARTING = "restarting"
    STOPPED = "stopped"


TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    ChildState.STARTING: frozenset({ChildState.UP, ChildState.UNRESPONSIVE, ChildState.RESTARTING, ChildState.STOPPED}),
    ChildState.UP: frozenset({ChildState.UNRESPONSIVE, ChildState.RESTARTING, ChildState.STOPPED}),
    ChildState.UNRESPONSIVE: frozenset({ChildState.UP, ChildState.RESTARTING, ChildState.STOPPED}),
    ChildState.RESTARTING: frozenset({ChildState.STARTING, ChildState.STOPPED}),
    ChildState.STOPPED: frozenset(),
}


class IllegalTransition(Exception):
    """A supervisor asked for a move its child's state machine does not have: a bug."""


def moved(name: str, old: ChildState, new: ChildState) -> ChildState:
    """``new``, once the move from ``old`` is checked (and logged as ``name: old -> new``); staying is no move."""
    if new is old:
        return old
    if not may(old, new):
        raise IllegalTransition(f"{name}: {old} -> {new} is not a transition")
    log.info("%s: %s -> %s", name, old, new)
    return new


def may(old: ChildState, new: ChildState) -> bool:
    """Whether ``new`` may follow ``old``: an answer from an ExaBGP that has already exited does not make it up."""
    return new is old or new in TRANSITIONS[old]
