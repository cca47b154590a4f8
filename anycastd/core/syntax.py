"""Writers of other programs' syntax: each value becomes a token the other program reads back unchanged.

Theory of operation
-------------------
anycastd writes text that other programs parse: ExaBGP's configuration
file, vtysh commands for FRR, nftables rulesets. A value from the operator's
file placed in that text as it is could end one statement and begin another.
So nothing here pastes user text into a template: each writer takes one
value and returns one token, or raises ValueError when the other program's
grammar has no way to say it. The configuration loader calls the same
writers, so an unwritable value is refused at its line in the file, before
anything runs.

ExaBGP (``exabgp_word``) first expands backslash escapes in the whole line
(``\\n``, ``\\u0022``, ``\\\\``), then splits it into words at spaces, ``;``,
``{``, ``}``, ``[``, ``]`` and ``,`` except inside quotes, and drops what
follows an unquoted ``#``. Its tokeniser cannot read a quote character of
either kind inside a word (a ``'`` inside ``"..."`` reopens the quote), so
such values, and control characters, are refused; backslashes are doubled
and anything outside a small safe alphabet is quoted.

FRR (``vtysh_word``) and nftables (``nft_word``) take only typed values
here (addresses, prefixes, numbers, interface names): their writers check
each word against a strict token grammar and refuse anything else.

tests/unit/test_syntax.py checks each round trip with Hypothesis against
the other program's own parser: ExaBGP's tokeniser and configuration parser
in-process, FRR's and nft's where they are installed.
"""

from __future__ import annotations

import ipaddress
import re
import struct

_EXABGP_BARE = re.compile(r"^[A-Za-z0-9_.:/+=@%-]+\Z")
_TOKEN = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}\Z")

Typed = int | str | ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network


def exabgp_problem(value: str) -> str | None:
    """Why ``value`` cannot be one ExaBGP token, or None if it can."""
    if not value:
        return "it is empty"
    if not value.isprintable():  # control characters, newlines and line separators included
        return "it holds a control character"
    if '"' in value or "'" in value:
        return "ExaBGP's configuration cannot hold a quote character (' or \") inside a value"
    return None


def exabgp_word(value: str) -> str:
    """One ExaBGP configuration token that reads back as ``value``; ValueError if none can."""
    problem = exabgp_problem(value)
    if problem is not None:
        raise ValueError(f"cannot be written to ExaBGP's configuration: {problem}: {value!r}")
    if _EXABGP_BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\") + '"'


def exabgp_comment(text: str) -> str:
    """A comment line; characters ExaBGP's escape pass acts on (backslash) or that end a line become '?'."""
    return "# " + "".join("?" if c == "\\" or not c.isprintable() else c for c in text)


def _typed_word(value: Typed, program: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"a boolean is not a {program} word")
    if isinstance(value, int):
        return str(value)
    out = str(value)
    if not _TOKEN.match(out):
        raise ValueError(f"{out!r} is not a {program} word (letters, digits and _ . : / - only)")
    return out


def vtysh_word(value: Typed) -> str:
    """One word of a vtysh command: a number, address, prefix or name; ValueError for anything else."""
    return _typed_word(value, "vtysh")


def vtysh_command(*words: Typed) -> str:
    return " ".join(vtysh_word(w) for w in words)


def nft_word(value: Typed) -> str:
    """One word of an nftables rule; ValueError for anything but a number, address, prefix or name."""
    return _typed_word(value, "nftables")


_COMMUNITY = re.compile(r"^([0-9]{1,5}):([0-9]{1,5})\Z")


#: The most extra copies of the local AS an announcement's AS path may carry (config: as_path_prepend).
MAX_PREPEND = 10

#: A service's weight is 1 to WEIGHT_MAX; each unit goes out as BYTES_PER_WEIGHT (1 Mbit/s) of link
#: bandwidth, so a router shows weight 10 as 10 Mbps. WEIGHT_MAX times BYTES_PER_WEIGHT is exact in the
#: community's IEEE 754 single-precision float (15,625 times 1,000 < 2**24).
WEIGHT_MAX = 1000
BYTES_PER_WEIGHT = 125_000
#: The two-octet AS a four-octet local AS is written as (RFC 6793's AS_TRANS).
AS_TRANS = 23456


def link_bandwidth(local_asn: int, weight: int) -> str:
    """The link-bandwidth extended community (RFC 10005: type 0x40, non-transitive
    two-octet AS specific; subtype 0x04) for ``weight``, as ExaBGP's API takes it: ``0x`` and 16 hex digits.
    Raises ValueError."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= WEIGHT_MAX:
        raise ValueError(f"weight must be a whole number from 1 to {WEIGHT_MAX}, got {weight!r}")
    if isinstance(local_asn, bool) or not isinstance(local_asn, int) or not 1 <= local_asn <= 4294967295:
        raise ValueError(f"the local AS must be 1 to 4294967295, got {local_asn!r}")
    asn = local_asn if local_asn <= 65535 else AS_TRANS
    bandwidth = struct.unpack("!I", struct.pack("!f", float(weight * BYTES_PER_WEIGHT)))[0]
    return f"0x4004{asn:04x}{bandwidth:08x}"


_LARGE_COMMUNITY = re.compile(r"^([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})\Z")


def large_community(value: str) -> str:
    """A large BGP community (RFC 8092) as ``ASN:DATA:DATA``, each 0 to 4294967295. Raises ValueError."""
    m = _LARGE_COMMUNITY.match(value) if isinstance(value, str) else None
    if m is None or not all(int(part) <= 4294967295 for part in m.groups()):
        raise ValueError(f"a large BGP community is three numbers 0-4294967295 joined by ':', got {value!r}")
    return value


def community(value: str) -> str:
    """A standard BGP community (RFC 1997) as ``ASN:VALUE``, each 0 to 65535: the only form written to
    ExaBGP's API or FRR's configuration. Raises ValueError."""
    m = _COMMUNITY.match(value) if isinstance(value, str) else None
    if m is None or not all(int(part) <= 65535 for part in m.groups()):
        raise ValueError(f"a BGP community is two numbers 0-65535 joined by ':', got {value!r}")
    return value
