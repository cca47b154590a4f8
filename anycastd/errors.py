"""One root for every error anycastd raises on purpose.

Foreign exceptions (OSError, NetlinkError, dnspython's, subprocess's) are
translated into these at the adapter that met them, and nowhere else. The
docstring of each class says what kind of problem it is; the message says
what to fix.
"""

from __future__ import annotations


class AnycastdError(Exception):
    """An anycastd error."""


class ConfigError(AnycastdError):
    """The configuration is invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class AddressError(AnycastdError):
    """The service address could not be bound on the loopback clone."""


class AnnounceError(AnycastdError):
    """A route could not be announced or withdrawn."""
