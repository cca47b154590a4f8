"""Writers of other programs' syntax: what anycastd writes, the other program reads back as the same value.

ExaBGP's tokeniser and configuration parser run in-process (they are Python);
FRR's reading of a static route is checked with anycastd's parser of FRR's
running configuration here and with FRR itself in tests/integration; nft
checks each generated ruleset where it is installed and we are root.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from exabgp.configuration.configuration import Configuration
from exabgp.configuration.core.format import tokens
from exabgp.environment import getenv
from exabgp.logger import log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anycastd.announce.exabgp_config import helper_argv, render_config
from anycastd.announce.exabgp_text import route_words
from anycastd.announce.frr import no_route_command, parse_running_config, route_command
from anycastd.config.sidecar import parse
from anycastd.core.attributes import RouteAttributes
from anycastd.core.routes import StaticRoute
from anycastd.core.syntax import (
    AS_TRANS,
    BYTES_PER_WEIGHT,
    WEIGHT_MAX,
    exabgp_comment,
    exabgp_problem,
    exabgp_word,
    link_bandwidth,
    nft_word,
    vtysh_command,
    vtysh_word,
)
from anycastd.errors import ConfigError
from anycastd.watch.nft_meter import nft_ruleset
from tests.helpers import GOOD

log.init(getenv())

# Every character class a hostile value might use: quotes, escapes, separators, comments, controls, Unicode.
HOSTILE = st.lists(
    st.sampled_from([*"aZ09 \t\n\r\\\"';{}[](),#/.:-_=@%!$&*~\x00\x7f\u2028é漢", "\\n", "\\u0022"]),
    max_size=30,
).map("".join)


def _words(line: str) -> list[list[str]]:
    return [[w for _, _, w in parsed] for parsed in tokens([line])]


@given(st.one_of(HOSTILE, st.text(max_size=40)))
def test_an_exabgp_word_reads_back_as_the_value_or_is_refused(value: str) -> None:
    try:
        written = exabgp_word(value)
    except ValueError:
        assert exabgp_problem(value) is not None
        return
    assert "\n" not in written
    assert _words(f"md5-password {written};") == [["md5-password", value, ";"]]


@given(HOSTILE)
def test_an_exabgp_comment_is_one_ignored_line(text: str) -> None:
    line = exabgp_comment(text)
    assert "\n" not in line and "\r" not in line
    assert _words(line) == []


_MD5 = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80)
_DIRS = st.text(alphabet=st.sampled_from(list("aZ09 \\;{}[]#,.-_=@%!$&*~é")), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=_MD5, directory=_DIRS, source=HOSTILE)
def test_exabgp_reads_the_generated_configuration_as_configured(
    tmp_path: Path, password: str, directory: str, source: str
) -> None:
    """Whatever an operator writes, ExaBGP ends up with one process (ours) and the configured values, or the
    configuration is refused at its line before anything runs."""
    text = GOOD.replace("md5_password: s3cret", f"md5_password: {_yaml(password)}")
    text += f"runtime_dir: {_yaml('/run/' + directory)}\n"
    try:
        config = parse(text, source or "x")
    except ConfigError as exc:
        assert all(p.split(": ", 1)[0].count(":") >= 2 for p in exc.problems), exc.problems
        return
    socket_path = config.runtime_dir / "exabgp.sock"
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config(config, socket_path))
    exabgp = Configuration([str(conf)])
    assert exabgp.reload(), exabgp.error
    assert {name: p["run"] for name, p in exabgp.processes.items()} == {
        "anycastd": helper_argv(socket_path, config.exabgp.watchdog, config.exabgp.stall)
    }
    passwords = sorted((n["md5-password"] or "") for n in exabgp.neighbors.values())
    assert passwords == sorted(["", password])
    assert {n["outgoing-ttl"] for n in exabgp.neighbors.values()} == {255}


def _yaml(value: str) -> str:
    """``value`` as a YAML double-quoted scalar."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize(
    ("key", "hostile"),
    [
        ("md5_password", 'x";}\nprocess evil {\n run /bin/touch /tmp/owned;\n}\nneighbor 192.0.2.9 {\n#'),
        ("md5_password", "x';}"),
        ("runtime_dir", '/run/x;\n}\nprocess evil {\n run /bin/sh -c "touch /tmp/owned";'),
        ("runtime_dir", "/run/it's"),
    ],
)
def test_the_injections_that_once_ran_a_command_are_refused_at_their_line(key: str, hostile: str) -> None:
    if key == "md5_password":
        text = GOOD.replace("md5_password: s3cret", f"md5_password: {_yaml(hostile)}")
    else:
        text = GOOD + f"runtime_dir: {_yaml(hostile)}\n"
    with pytest.raises(ConfigError) as info:
        parse(text, "anycastd.yaml")
    assert any(f": {key}" in p or f".{key}" in p for p in info.value.problems), info.value.problems
    assert all(p.startswith("anycastd.yaml:") and p.split(":")[1].isdigit() for p in info.value.problems)


def test_escapes_in_a_password_reach_exabgp_as_the_characters_written(tmp_path: Path) -> None:
    password = r"x\u0022;}process\u0020evil{run\u0020/bin/sh;}"
    config = parse(GOOD.replace("md5_password: s3cret", f"md5_password: {_yaml(password)}"))
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config(config, Path("/run/anycastd/exabgp.sock")))
    exabgp = Configuration([str(conf)])
    assert exabgp.reload(), exabgp.error
    assert list(exabgp.processes) == ["anycastd"]
    assert password in [n["md5-password"] for n in exabgp.neighbors.values()]


_V4 = st.ip_addresses(v=4)
_V6 = st.ip_addresses(v=6)


@st.composite
def _routes(draw: st.DrawFn) -> tuple[StaticRoute, int]:
    version = draw(st.sampled_from([4, 6]))
    address = draw(_V4 if version == 4 else _V6)
    length = draw(st.integers(0, 32 if version == 4 else 128))
    prefix = ipaddress.ip_network(f"{address}/{length}", strict=False)
    nexthop: ipaddress.IPv4Address | ipaddress.IPv6Address = draw(_V4) if version == 4 else draw(_V6)
    return StaticRoute(prefix, nexthop), draw(st.integers(1, 2**32 - 1))


@given(_routes())
def test_a_static_route_command_reads_back_as_the_same_route_and_tag(case: tuple[StaticRoute, int]) -> None:
    route, tag = case
    found = parse_running_config(route_command(route, tag))
    assert [(i.route, i.tag) for i in found] == [(route, tag)]
    assert no_route_command(route, tag) == "no " + route_command(route, tag)


@given(HOSTILE)
def test_a_vtysh_or_nft_word_is_one_token_or_refused(value: str) -> None:
    for writer in (vtysh_word, nft_word):
        try:
            written = writer(value)
        except ValueError:
            continue
        assert written == value and written.split() == [value] and not set(written) & set("!#;{}\"'\\")
    with pytest.raises(ValueError):
        vtysh_command("ip", "route", "203.0.113.53/32 192.0.2.1\nno ip route 0.0.0.0/0 192.0.2.1")
    with pytest.raises(ValueError):
        vtysh_word(True)


@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0, reason="nft --check needs nft and root")
@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(_V4, _V6), min_size=1, max_size=4, unique=True))
def test_nft_accepts_every_generated_ruleset(addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
    checked = subprocess.run(
        ["nft", "--check", "-f", "-"], check=False, input=nft_ruleset(addresses), text=True, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("value", ["a\n", "203.0.113.53/32\n", "tag\n"])
def test_a_trailing_newline_is_not_a_word(value: str) -> None:
    """Python's `$` matches before a final newline: every grammar here anchors with \\Z (found by Hypothesis)."""
    for writer in (vtysh_word, nft_word):
        with pytest.raises(ValueError):
            writer(value)


_COMMUNITY = st.builds(lambda a, b: f"{a}:{b}", st.integers(0, 65535), st.integers(0, 65535))
_LARGE = st.builds(lambda a, b, c: f"{a}:{b}:{c}", *[st.integers(0, 2**32 - 1)] * 3)
_ATTRIBUTES = st.builds(
    RouteAttributes,
    st.lists(_COMMUNITY, max_size=4, unique=True).map(tuple),
    st.lists(_LARGE, max_size=4, unique=True).map(tuple),
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.integers(0, 10),
    st.one_of(st.none(), st.integers(1, WEIGHT_MAX)),
)


@given(_ATTRIBUTES, st.integers(1, 2**32 - 1))
def test_route_attributes_become_only_numbers_and_exabgps_keywords(attributes: RouteAttributes, asn: int) -> None:
    words = route_words(attributes, asn).replace("[", " [ ").replace("]", " ] ").split()
    keywords = {"med", "community", "large-community", "extended-community", "as-path", "[", "]"}
    number = r"[0-9]+(:[0-9]+){0,2}|0x4004[0-9a-f]{12}"  # the last: a weight's link bandwidth, 8 octets
    assert all(w in keywords or re.fullmatch(number, w) for w in words), words
    assert ("extended-community" in words) == (attributes.weight is not None)
    if attributes.as_path_prepend:
        assert words.count(str(asn)) >= 1 + attributes.as_path_prepend


@given(st.integers(1, WEIGHT_MAX), st.integers(1, 2**32 - 1))
def test_a_weight_is_the_link_bandwidth_community_that_decodes_back_to_it(weight: int, asn: int) -> None:
    value = bytes.fromhex(link_bandwidth(asn, weight).removeprefix("0x"))
    kind, subtype, as2, bandwidth = struct.unpack("!BBHf", value)
    assert (kind, subtype) == (0x40, 0x04)  # non-transitive, two-octet AS specific; link bandwidth
    assert as2 == (asn if asn <= 65535 else AS_TRANS)
    assert bandwidth == weight * BYTES_PER_WEIGHT  # exact: no rounding in the float


@pytest.mark.parametrize(("asn", "weight"), [(65001, 0), (65001, WEIGHT_MAX + 1), (65001, True), (0, 1), (2**32, 1)])
def test_a_weight_or_as_out_of_range_has_no_link_bandwidth(asn: int, weight: int) -> None:
    with pytest.raises(ValueError):
        link_bandwidth(asn, weight)


@given(HOSTILE)
def test_a_hostile_community_never_reaches_exabgps_api(value: str) -> None:
    for attributes in (RouteAttributes(communities=(value,)), RouteAttributes(large_communities=(value,))):
        try:
            words = route_words(attributes, 65001)
        except ValueError:
            continue
        assert re.fullmatch(r" (large-)?community \[[0-9:]+\]", words), words
