"""The `anycastd router` configuration: a valid file loads; each mistake is named where it is."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from anycastd.config.router import DEFAULT_ROUTE_TAG, load_router, parse_router
from anycastd.config.sidecar import parse
from anycastd.errors import ConfigError

GOOD = """\
router:
  vtysh: [vtysh, --vty_socket, /run/frr]
services:
  dns:
    prefixes: [203.0.113.53/32, 2001:db8::53/128]
    servers:
      - name: ns1
        address: 192.0.2.2
        nexthops: [192.0.2.2, "2001:db8:0:1::2"]
      - name: ns2
        address: 192.0.2.10
        nexthops: [192.0.2.10, "2001:db8:0:2::2"]
"""

V4_ONLY = """\
services:
  dns:
    prefixes: [203.0.113.53/32]
    checks:
      - qname: health.example
        qtype: TXT
        answer: healthy
    servers:
      - {name: ns1, address: 192.0.2.2}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_router(text, "router.yaml")
    return info.value.problems


def test_good_config_loads_with_defaults() -> None:
    c = parse_router(GOOD, "router.yaml")
    assert c.vtysh.command == ("vtysh", "--vty_socket", "/run/frr")
    assert (c.tag, c.when_all_down, c.vtysh.timeout) == (DEFAULT_ROUTE_TAG, "keep", 5.0)
    dns = c.service("dns")
    ns1 = dns.server("ns1")
    v4, v6 = dns.prefixes
    assert str(ns1.nexthop_for(v4)) == "192.0.2.2" and str(ns1.nexthop_for(v6)) == "2001:db8:0:1::2"
    (check,) = dns.checks_for(ns1)
    assert check.address == ipaddress.ip_address("192.0.2.2")
    assert not check.probe_service_addresses  # the router reaches the service address through its own routes
    assert (check.interval, check.rise, check.fall) == (0.2, 3, 3)
    assert c.server_names == ["ns1", "ns2"]


def test_the_nexthop_defaults_to_the_admin_address_and_checks_are_templates() -> None:
    dns = parse_router(V4_ONLY).service("dns")
    ns1 = dns.server("ns1")
    assert ns1.nexthops == (ipaddress.ip_address("192.0.2.2"),)
    assert dns.checks_for(ns1)[0].answer == "healthy"


def test_the_shipped_example_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "anycastd-router.yaml"
    assert len(load_router(example).service("dns").servers) == 3


def test_a_sidecar_file_is_not_a_router_file_and_back() -> None:
    assert any("unknown key" in p and "neighbors" in p for p in problems("neighbors: []\n" + V4_ONLY))
    with pytest.raises(ConfigError) as info:
        parse(GOOD, "anycastd.yaml")
    assert any("anycastd router --config" in p for p in info.value.problems)


MISTAKES = [
    ("tag: 0 is out of range", "router:\n  tag: 0\n", "router.yaml:2:3: router.tag: must be between 1 and"),
    ("policy typo", "router:\n  when_all_down: drop\n", "router.when_all_down: must be one of keep, withdraw"),
    ("vtysh not a list", "router:\n  vtysh: vtysh -d\n", "router.vtysh: must be a list of 1 to 64 strings"),
    ("unknown router key", "router:\n  tags: 5\n", "router.tags: unknown key"),
]


@pytest.mark.parametrize(("extra", "expected"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_router_settings_are_checked(extra: str, expected: str) -> None:
    assert any(expected in p for p in problems(extra + V4_ONLY)), problems(extra + V4_ONLY)


SERVER_MISTAKES = [
    ("address in a check", "    checks: [{address: 192.0.2.2}]\n", "checks[0].address: unknown key"),
    ("weight", "      - {name: ns2, address: 192.0.2.10, weight: 2}\n", "every server weighs 1"),
    ("same name", "      - {name: ns1, address: 192.0.2.10}\n", "server 'ns1' is listed twice"),
    ("same address", "      - {name: ns2, address: 192.0.2.2}\n", "192.0.2.2 is already the address of server 'ns1'"),
    ("bad name", "      - {name: -x, address: 192.0.2.10}\n", "servers[1].name: server names are"),
    ("bad nexthop", "      - {name: ns2, address: 192.0.2.10, nexthops: [nope]}\n", "nexthops[0]: must be an IPv4"),
    (
        "two nexthops of one family",
        "      - {name: ns2, address: 192.0.2.10, nexthops: [192.0.2.10, 192.0.2.11]}\n",
        "a second IPv4 nexthop",
    ),
    ("empty nexthops", "      - {name: ns2, address: 192.0.2.10, nexthops: []}\n", "nexthops: must be a non-empty"),
    (
        "address inside the service prefix",
        "      - {name: ns2, address: 203.0.113.53}\n",
        "203.0.113.53 is inside the service prefix 203.0.113.53/32",
    ),
]


@pytest.mark.parametrize(("line", "expected"), [m[1:] for m in SERVER_MISTAKES], ids=[m[0] for m in SERVER_MISTAKES])
def test_server_mistakes_are_named(line: str, expected: str) -> None:
    if line.startswith("    checks"):  # replaces the check template
        text = V4_ONLY.replace(
            "    checks:\n      - qname: health.example\n        qtype: TXT\n        answer: healthy\n", line
        )
    else:  # adds a second server
        text = V4_ONLY + line
    assert any(expected in p for p in problems(text)), problems(text)


def test_a_dual_stack_service_needs_a_nexthop_of_each_family_on_every_server() -> None:
    text = GOOD + "      - {name: ns3, address: 192.0.2.18}\n"
    assert problems(text) == [
        "router.yaml:13:9: services.dns.servers[2].nexthops: server 'ns3' has no IPv6 nexthop for 2001:db8::53/128;"
        " add one to nexthops"
    ]


def test_a_prefix_belongs_to_one_service() -> None:
    text = V4_ONLY + V4_ONLY.replace("services:\n  dns:", "  dns2:")
    assert any("203.0.113.53/32 is already a prefix of service 'dns'" in p for p in problems(text))


def test_the_cascade_window_is_the_slowest_checks_verdict_spread() -> None:
    """fall (or fall_hard, if larger) probes an interval apart, the last waiting its timeout; the largest of
    the service's checks."""
    config = parse_router(
        V4_ONLY.replace(
            "        answer: healthy\n",
            "        answer: healthy\n        interval: 0.5\n        timeout: 0.125\n        fall: 2\n"
            "      - {qname: b.example, interval: 0.25, timeout: 0.0625, fall: 3, fall_hard: 5}\n",
        )
    )
    assert config.services[0].cascade_window == 5 * 0.25 + 0.0625
    assert parse_router(V4_ONLY).services[0].cascade_window == 3 * 0.2 + 0.15  # the defaults: 0.75 s


@pytest.mark.parametrize(("text", "flags"), [(GOOD, "router"), (Path("examples/anycastd.yaml"), "sidecar")])
def test_the_packages_example_marker_refuses_the_whole_file_at_its_line(text: str | Path, flags: str) -> None:
    body = Path(__file__).resolve().parents[2].joinpath(text).read_text() if isinstance(text, Path) else text
    reader = parse_router if flags == "router" else parse
    with pytest.raises(ConfigError) as error:
        reader("# installed by the package\n\nexample: true\n" + body, "f.yaml")
    assert error.value.problems == [
        "f.yaml:3:1: example: this is the example the package installed, not this host's configuration: describe "
        "this host's services (/usr/share/doc/anycastd-dns/configuration.md), then delete this line"
    ]


@pytest.mark.parametrize("reader", [parse_router, parse])
def test_a_document_that_only_says_example_is_not_a_mapping(reader: object) -> None:
    with pytest.raises(ConfigError) as error:
        reader("an example\n", "f.yaml")  # type: ignore[operator]
    assert "must be a mapping" in error.value.problems[0], error.value.problems
    assert "the package installed" not in error.value.problems[0]  # a substring of a scalar is not the key


@pytest.mark.parametrize(("given", "require"), [(None, None), ("all", 2), ("any", 1), (1, 1), (2, 2)])
def test_require_is_all_any_or_a_number_of_checks(given: object, require: int | None) -> None:
    checks = "    checks:\n      - qname: health.example\n        qtype: TXT\n        answer: healthy\n"
    two = "    checks:\n      - qname: health.example\n      - {qname: health.example, protocol: tcp}\n"
    line = f"    require: {given}\n" if given is not None else ""
    assert parse_router(V4_ONLY.replace(checks, two + line)).services[0].require == require
    example = Path(__file__).resolve().parents[2].joinpath("examples/anycastd.yaml").read_text()  # one check
    sidecar = example.replace("    checks:\n", line + "    checks:\n", 1)
    if given == 2:
        with pytest.raises(ConfigError, match="require: must be all, any, or how many of its 1 checks must pass"):
            parse(sidecar)
    else:
        assert parse(sidecar).services[0].require == (1 if given == "all" else require)


def test_require_beside_checks_that_are_all_wrong_names_the_checks_only() -> None:
    example = Path(__file__).resolve().parents[2].joinpath("examples/anycastd.yaml").read_text()
    broken = example.replace("    checks:\n", "    require: 1\n    checks:\n", 1).replace(
        "qname: health.example.", "qname: 'a..b'", 1
    )
    with pytest.raises(ConfigError) as error:
        parse(broken)
    assert len(error.value.problems) == 1 and "qname" in error.value.problems[0], error.value.problems
