"""Every configuration key as a row: set, it is read into its field; left out, its default; just past its
bound, refused with its own key path and the exact words. Named by the mutants of `make mutation`: a key
read under another name, a path, a bound or a default changed by one is caught here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from anycastd.config import router as router_config
from anycastd.config import sidecar as config
from anycastd.config.checks import TEMPLATE_ADDRESS, Check
from anycastd.config.schema import ControlSettings, MetricsSettings, to_command
from anycastd.core.attributes import RouteAttributes
from anycastd.core.damping import DampingSettings
from anycastd.core.degradation import ExitRule, LatencyRule
from anycastd.errors import ConfigError
from tests.helpers import GOOD, Key, problems_of, with_value

ROUTER = """\
services:
  dns:
    prefixes: [203.0.113.53/32]
    checks: [{}]
    servers:
      - {name: ns1, address: 192.0.2.2}
"""

CHECK: Key = ["services", "dns", "checks", 0]
SIDECAR_ROWS: list[tuple[Key, Any, Callable[[config.Config], Any], Any, str]] = [
    # (key, a good value, where it lands, the bad value just past a bound, the exact problem)
    (["local_asn"], 4294967295, lambda c: c.local_asn, 4294967296,
     "local_asn: must be between 1 and 4294967295, got 4294967296"),
    (["router_id"], "192.0.2.99", lambda c: str(c.router_id), "2001:db8::1",
     "router_id: must be an IPv4 address, got '2001:db8::1'"),
    (["runtime_dir"], "/run/x", lambda c: c.runtime_dir, "run/x", "runtime_dir: must be an absolute path, got 'run/x'"),
    (["state_dir"], "/var/x", lambda c: c.state_dir, "var/x", "state_dir: must be an absolute path, got 'var/x'"),
    (["control", "socket"], "/run/a.sock", lambda c: c.control.socket, "a.sock",
     "control.socket: must be an absolute path, got 'a.sock'"),
    (["metrics", "port"], 65535, lambda c: c.metrics.port, 65536, "metrics.port: must be between 1 and 65535, got 65536"),
    (["metrics", "address"], "192.0.2.10", lambda c: str(c.metrics.address), "x",
     "metrics.address: must be an IPv4 or IPv6 address, got 'x'"),
    (["drain", "quiet"], 600, lambda c: c.drain.quiet, 600.5, "drain.quiet: must be at most 600 seconds, got 600.5"),
    (["drain", "timeout"], 3600, lambda c: c.drain.timeout, 3600.5,
     "drain.timeout: must be at most 3600 seconds, got 3600.5"),
    (["drain", "fallback"], 600, lambda c: c.drain.fallback, 600.5,
     "drain.fallback: must be at most 600 seconds, got 600.5"),
    (["drain", "grace"], 0, lambda c: c.drain.grace, -0.5, "drain.grace: must be >= 0, got -0.5"),
    (["drain", "grace"], 600, lambda c: c.drain.grace, 600.5, "drain.grace: must be at most 600 seconds, got 600.5"),
    (["exabgp", "watchdog"], 60, lambda c: c.exabgp.watchdog, 60.5,
     "exabgp.watchdog: must be at most 60 seconds, got 60.5"),
    (["exabgp", "watchdog"], 0.31, lambda c: c.exabgp.watchdog, 0.3, "exabgp.watchdog: must be > 0.3, got 0.3"),
    (["exabgp", "stall"], 0.11, lambda c: c.exabgp.stall, 0.1, "exabgp.stall: must be > 0.1, got 0.1"),
    (["exabgp", "stall"], 1.5, lambda c: c.exabgp.stall, 1.51, "exabgp.stall: must be at most exabgp.watchdog (1.5), got 1.51"),
    (["exabgp", "command"], ["/usr/bin/exabgp"], lambda c: c.exabgp.command, "exabgp",
     "exabgp.command: must be a list of 1 to 64 strings (program and arguments), got a string"),
    (["neighbors", 0, "peer_asn"], 4294967295, lambda c: c.neighbors[0].peer_asn, 0,
     "neighbors[0].peer_asn: must be between 1 and 4294967295, got 0"),
    (["neighbors", 0, "hold_time"], 65535, lambda c: c.neighbors[0].hold_time, 65536,
     "neighbors[0].hold_time: must be between 3 and 65535 seconds (RFC 4271's minimum is 3), got 65536"),
    (["neighbors", 0, "hold_time"], 3, lambda c: c.neighbors[0].hold_time, 2,
     "neighbors[0].hold_time: must be between 3 and 65535 seconds (RFC 4271's minimum is 3), got 2"),
    (["neighbors", 0, "gtsm"], True, lambda c: c.neighbors[0].gtsm, "yes",
     "neighbors[0].gtsm: must be true or false, got 'yes'"),
    (["neighbors", 0, "bfd"], True, lambda c: c.neighbors[0].bfd == config.BfdSettings(0.3, 3), "yes",
     "neighbors[0].bfd: must be true, false or a mapping with interval, multiplier and damping, got a string"),
    (["neighbors", 0, "bfd", "damping"], False, lambda c: c.neighbors[0].bfd.damping, "no",
     "neighbors[0].bfd.damping: must be true or false, got 'no'"),
    (["neighbors", 0, "bfd", "interval"], 0.01, lambda c: c.neighbors[0].bfd.interval, 0.009,
     "neighbors[0].bfd.interval: must be between 0.01 and 60 seconds, got 0.009"),
    (["neighbors", 0, "bfd", "interval"], 60, lambda c: c.neighbors[0].bfd.interval, 60.001,
     "neighbors[0].bfd.interval: must be between 0.01 and 60 seconds, got 60.001"),
    (["neighbors", 0, "bfd", "interval"], 0.105, lambda c: c.neighbors[0].bfd.interval, 0.1005,
     "neighbors[0].bfd.interval: must be a whole number of milliseconds (bfdd counts in ms), got 0.1005"),
    (["neighbors", 0, "bfd", "multiplier"], 2, lambda c: c.neighbors[0].bfd.multiplier, 1,
     "neighbors[0].bfd.multiplier: must be between 2 and 255, got 1"),
    (["neighbors", 0, "bfd", "multiplier"], 255, lambda c: c.neighbors[0].bfd.multiplier, 256,
     "neighbors[0].bfd.multiplier: must be between 2 and 255, got 256"),
    (["bfdd", "command"], ["/usr/lib/frr/bfdd", "--log-level", "debug"], lambda c: c.bfdd.command, "bfdd",
     "bfdd.command: must be a list of 1 to 64 strings (program and arguments), got a string"),
    (["neighbors", 0, "md5_password"], "x" * 80, lambda c: c.neighbors[0].md5_password, "x" * 81,
     "neighbors[0].md5_password: must be 1 to 80 printable ASCII characters without spaces (the TCP MD5 key limit)"),
    (["neighbors", 0, "local_address"], "192.0.2.10", lambda c: str(c.neighbors[0].local_address), "2001:db8::9",
     "neighbors[0].local_address: must be of the same family as address 192.0.2.9, got 2001:db8::9"),
    (["services", "dns", "interface"], "lo", lambda c: c.services[0].interface, "x" * 16,
     "services.dns.interface: must be an interface name of 1 to 15 letters, digits, '_', '.', '-', got '"
     + "x" * 16 + "'"),
    (["services", "dns", "allow_non_host_prefixes"], True, lambda c: c.services[0].allow_non_host_prefixes, 1,
     "services.dns.allow_non_host_prefixes: must be true or false, got 1"),
    (["services", "dns", "require"], 1, lambda c: c.services[0].require, 2,
     "services.dns.require: must be all, any, or how many of its 1 checks must pass (1 to 1), got 2"),
    (["services", "dns", "require"], 1, lambda c: c.services[0].require, 0,
     "services.dns.require: must be all, any, or how many of its 1 checks must pass (1 to 1), got 0"),
    (["services", "dns", "require"], 1, lambda c: c.services[0].require, True,
     "services.dns.require: must be all, any, or how many of its 1 checks must pass (1 to 1), got True"),
    ([*CHECK, "dnssec"], True, lambda c: c.services[0].checks[0].dnssec, "yes",
     "services.dns.checks[0].dnssec: must be true or false, got 'yes'"),
    ([*CHECK, "port"], 65535, lambda c: c.services[0].checks[0].port, 65536,
     "services.dns.checks[0].port: must be between 1 and 65535, got 65536"),
    ([*CHECK, "qname"], "a.example.", lambda c: c.services[0].checks[0].qname, "a..b",
     "services.dns.checks[0].qname: is not a valid domain name: A DNS label is empty."),
    ([*CHECK, "qtype"], "aaaa", lambda c: c.services[0].checks[0].qtype, "BOGUS",
     "services.dns.checks[0].qtype: is not a DNS record type, got 'BOGUS'"),
    ([*CHECK, "rcode"], "nxdomain", lambda c: c.services[0].checks[0].rcode, "BOGUS",
     "services.dns.checks[0].rcode: is not a DNS response code such as NOERROR or NXDOMAIN, got 'BOGUS'"),
    ([*CHECK, "protocol"], "tcp", lambda c: c.services[0].checks[0].transport, "sctp",
     "services.dns.checks[0].protocol: must be one of udp, tcp, dot, doh, got 'sctp'"),
    ([*CHECK, "answer"], "ok", lambda c: c.services[0].checks[0].answer, "",
     "services.dns.checks[0].answer: must be a non-empty string, got ''"),
    ([*CHECK, "interval"], 3600, lambda c: c.services[0].checks[0].interval, 3600.5,
     "services.dns.checks[0].interval: must be at most 3600 seconds, got 3600.5"),
    ([*CHECK, "timeout"], 0.01, lambda c: c.services[0].checks[0].timeout, 0,
     "services.dns.checks[0].timeout: must be > 0, got 0"),
    ([*CHECK, "rise"], 1000, lambda c: c.services[0].checks[0].rise, 1001,
     "services.dns.checks[0].rise: must be between 1 and 1000, got 1001"),
    ([*CHECK, "fall"], 1000, lambda c: c.services[0].checks[0].fall, 0,
     "services.dns.checks[0].fall: must be between 1 and 1000, got 0"),
    ([*CHECK, "fall_hard"], 1000, lambda c: c.services[0].checks[0].fall_hard, 1001,
     "services.dns.checks[0].fall_hard: must be between 1 and 1000, got 1001"),
    ([*CHECK, "probe_service_addresses"], False, lambda c: c.services[0].checks[0].probe_service_addresses, "no",
     "services.dns.checks[0].probe_service_addresses: must be true or false, got 'no'"),
    (["services", "dns", "damping", "penalty"], 1000000, lambda c: c.services[0].damping.penalty, 1000001,
     "services.dns.damping.penalty: must be between 1 and 1000000, got 1000001"),
    (["services", "dns", "damping", "suppress"], 1000000, lambda c: c.services[0].damping.suppress, 0,
     "services.dns.damping.suppress: must be between 1 and 1000000, got 0"),
    (["services", "dns", "damping", "reuse"], 1, lambda c: c.services[0].damping.reuse, 1000001,
     "services.dns.damping.reuse: must be between 1 and 1000000, got 1000001"),
    (["services", "dns", "damping", "half_life"], 3600, lambda c: c.services[0].damping.half_life, 3600.5,
     "services.dns.damping.half_life: must be at most 3600 seconds, got 3600.5"),
    (["services", "dns", "damping", "max_suppress"], 86400, lambda c: c.services[0].damping.max_suppress, 86400.5,
     "services.dns.damping.max_suppress: must be at most 86400 seconds, got 86400.5"),
    (["services", "dns", "weight"], 1000, lambda c: c.services[0].bgp.weight, 1001,
     "services.dns.weight: must be between 1 and 1000, got 1001"),
    (["services", "dns", "weight"], 1, lambda c: c.services[0].bgp.weight, 0,
     "services.dns.weight: must be between 1 and 1000, got 0"),
    (["services", "dns", "weight"], 3, lambda c: c.services[0].bgp.weight, 2.5,
     "services.dns.weight: must be a whole number, got 2.5"),
    (["services", "dns", "bgp", "med"], 4294967295, lambda c: c.services[0].bgp.med, 4294967296,
     "services.dns.bgp.med: must be between 0 and 4294967295, got 4294967296"),
    (["services", "dns", "bgp", "as_path_prepend"], 10, lambda c: c.services[0].bgp.as_path_prepend, 11,
     "services.dns.bgp.as_path_prepend: must be between 0 and 10, got 11"),
    (["services", "dns", "bgp", "communities"], ["65535:65535", "0:0"], lambda c: c.services[0].bgp.communities,
     ["65536:0"], "services.dns.bgp.communities: a BGP community is two numbers 0-65535 joined by ':', got '65536:0'"),
    (["services", "dns", "bgp", "communities"], ["1:1"] * 1, lambda c: c.services[0].bgp.communities, [3900010],
     'services.dns.bgp.communities: each must be a quoted string like "65000:100", got 3900010'),
    (["services", "dns", "bgp", "communities"], [f"1:{i}" for i in range(32)], lambda c: c.services[0].bgp.communities,
     [f"1:{i}" for i in range(33)], "services.dns.bgp.communities: must list at most 32 communities, got 33"),
    (["services", "dns", "bgp", "communities"], ["1:1", "1:2"], lambda c: c.services[0].bgp.communities, ["1:1", "1:1"],
     "services.dns.bgp.communities: lists one of its communities twice"),
    (["services", "dns", "bgp", "communities"], ["65535:1"], lambda c: c.services[0].bgp.communities, ["65535:0"],
     "services.dns.bgp.communities: 65535:0 is GRACEFUL_SHUTDOWN (RFC 8326): routers would use this path last, "
     "always; anycastd adds it itself to a failing service with failure_action: graceful-shutdown"),
    (["services", "dns", "bgp", "large_communities"], ["4294967295:0:4294967295"],
     lambda c: c.services[0].bgp.large_communities, ["4294967296:0:0"],
     "services.dns.bgp.large_communities: a large BGP community is three numbers 0-4294967295 joined by ':', got "
     "'4294967296:0:0'"),
    (["services", "dns", "bgp", "large_communities"], ["1:2:3"], lambda c: c.services[0].bgp.large_communities,
     "1:2:3", "services.dns.bgp.large_communities: must be a list of large communities, got a string"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "good", "where", "bad", "message"), SIDECAR_ROWS, ids=lambda v: str(v)[:40])
def test_every_sidecar_key_is_read_and_bounded(
    key: Key, good: Any, where: Callable[[config.Config], Any], bad: Any, message: str
) -> None:
    got = where(config.parse(with_value(GOOD, key, good)))
    expected = Path(good) if isinstance(got, Path) else tuple(good) if isinstance(got, tuple) else good
    expected = {"qtype": "AAAA", "rcode": "NXDOMAIN"}.get(str(key[-1]), expected)  # read in their canonical case
    assert got == expected
    assert problems_of(with_value(GOOD, key, bad), config.parse) == [message]


def test_bfd_needs_bfdd_and_says_which_package_brings_it() -> None:
    text = with_value(with_value(GOOD, ["neighbors", 1, "bfd"], True), ["bfdd", "command"], ["/nonexistent/bfdd"])
    assert problems_of(text, config.parse) == [
        "neighbors[1].bfd: needs FRR's bfdd, and /nonexistent/bfdd is not there: install the Debian package frr "
        "(or set bfdd.command)"
    ]
    without = with_value(GOOD, ["bfdd", "command"], ["/nonexistent/bfdd"])  # no neighbor asks for BFD
    assert config.parse(without).bfd_neighbors == ()


def test_bfd_is_per_neighbor_and_off_unless_asked() -> None:
    c = config.parse(with_value(GOOD, ["neighbors", 1, "bfd"], {"interval": 0.1}))
    assert [n.bfd for n in c.neighbors] == [None, config.BfdSettings(0.1, 3, True)]
    assert c.bfd_neighbors == (c.neighbors[1],) and c.neighbors[1].bfd.detection_time == pytest.approx(0.3)
    assert config.parse(with_value(GOOD, ["neighbors", 1, "bfd"], False)).bfd_neighbors == ()
    assert c.bfdd == config.BfddSettings(("/usr/lib/frr/bfdd",))


def test_the_sidecar_defaults_whole() -> None:
    c = config.parse(GOOD, "f.yaml")
    assert (c.runtime_dir, c.state_dir, c.control, c.metrics, c.source) == (
        Path("/run/anycastd"),
        Path("/var/lib/anycastd"),
        ControlSettings(),
        None,
        "f.yaml",
    )
    assert c.drain == config.DrainSettings(1.0, 30.0, 5.0, 3.0) and c.exabgp == config.ExaBGPSettings(None, 1.5)
    assert [(n.hold_time, n.gtsm, n.md5_password) for n in c.neighbors] == [(3, False, None), (3, False, "s3cret")]
    dns = c.services[0]
    assert (dns.interface, dns.allow_non_host_prefixes, dns.failure_action, dns.damping) == (
        "anycast0",
        False,
        "withdraw",
        DampingSettings(),
    )
    assert dns.bgp == RouteAttributes((), (), None, 0, None)  # no attribute of its own: ExaBGP's defaults
    check = dns.checks[0]
    assert (check.port, check.transport, check.rcode, check.probe_service_addresses) == (53, "udp", "NOERROR", True)
    metrics = config.parse(with_value(GOOD, ["metrics"], {}))
    assert metrics.metrics == MetricsSettings(ipaddress.ip_address("127.0.0.1"), 9553)
    assert config.parse(GOOD).source == "<config>"


ROUTER_ROWS: list[tuple[Key, Any, Callable[[router_config.RouterConfig], Any], Any, str]] = [
    (["router", "tag"], 4294967295, lambda c: c.tag, 4294967296,
     "router.tag: must be between 1 and 4294967295, got 4294967296"),
    (["router", "vtysh_timeout"], 120, lambda c: c.vtysh.timeout, 120.5,
     "router.vtysh_timeout: must be at most 120 seconds, got 120.5"),
    (["router", "vtysh_timeout"], 0.5, lambda c: c.vtysh.timeout, 0, "router.vtysh_timeout: must be > 0, got 0"),
    (["router", "resync"], 3600, lambda c: c.vtysh.resync, 3600.5,
     "router.resync: must be at most 3600 seconds, got 3600.5"),
    (["router", "vtysh"], ["/usr/bin/vtysh", "-N", "x"], lambda c: c.vtysh.command, ["bin/vtysh"],
     "router.vtysh: the program must be an absolute path or a name found in PATH, got 'bin/vtysh'"),
    (["router", "when_all_down"], "withdraw", lambda c: c.when_all_down, "drop",
     "router.when_all_down: must be one of keep, withdraw, got 'drop'"),
    (["router", "frr_session"], "vtysh", lambda c: c.vtysh.session, "telnet",
     "router.frr_session: must be one of vty, vtysh, got 'telnet'"),
    (["runtime_dir"], "/run/r", lambda c: c.runtime_dir, "r", "runtime_dir: must be an absolute path, got 'r'"),
    (["state_dir"], "/var/r", lambda c: c.state_dir, "r", "state_dir: must be an absolute path, got 'r'"),
    (["control", "socket"], "/run/r.sock", lambda c: c.control.socket, "r",
     "control.socket: must be an absolute path, got 'r'"),
    (["metrics", "port"], 1, lambda c: c.metrics.port, 0, "metrics.port: must be between 1 and 65535, got 0"),
    (["services", "dns", "allow_non_host_prefixes"], True, lambda c: c.services[0].servers[0].name, "x",
     "services.dns.allow_non_host_prefixes: must be true or false, got 'x'"),
    (["services", "dns", "require"], 1, lambda c: c.services[0].require, "some",
     "services.dns.require: must be all, any, or how many of its 1 checks must pass (1 to 1), got 'some'"),
    (["services", "dns", "checks", 0, "interval"], 10, lambda c: c.services[0].checks[0].interval, 3601,
     "services.dns.checks[0].interval: must be at most 3600 seconds, got 3601"),
    (["services", "dns", "damping", "half_life"], 5, lambda c: c.services[0].damping.half_life, 0,
     "services.dns.damping.half_life: must be > 0, got 0"),
    (["services", "dns", "servers", 0, "address"], "192.0.2.7", lambda c: str(c.services[0].servers[0].address),
     "x", "services.dns.servers[0].address: must be an IPv4 or IPv6 address, got 'x'"),
    (["services", "dns", "servers", 0, "name"], "a" * 63, lambda c: c.services[0].servers[0].name, "a" * 64,
     "services.dns.servers[0].name: server names are 1 to 63 letters, digits, '_', '.', '-', starting with one of "
     "the first two"),
    (["services", "dns", "servers", 0, "weight"], 1, lambda c: c.services[0].servers[0].name, 2,
     "services.dns.servers[0].weight: FRR's staticd installs equal-cost paths only, so every server weighs 1; "
     "remove the key (to give a server more traffic, give it more service addresses)"),
    (["services", "dns", "servers", 0, "nexthops"], ["192.0.2.3"], lambda c: str(c.services[0].servers[0].nexthops[0]),
     [], "services.dns.servers[0].nexthops: must be a non-empty list of addresses, got a list"),
]  # fmt: skip

_GOOD_AS = {"allow_non_host_prefixes": "ns1", "weight": "ns1"}


@pytest.mark.parametrize(("key", "good", "where", "bad", "message"), ROUTER_ROWS, ids=lambda v: str(v)[:40])
def test_every_router_key_is_read_and_bounded(
    key: Key, good: Any, where: Callable[[router_config.RouterConfig], Any], bad: Any, message: str
) -> None:
    got = where(router_config.parse_router(with_value(ROUTER, key, good)))
    expected = _GOOD_AS.get(str(key[-1]), good)
    if isinstance(got, Path):
        expected = Path(good)
    elif isinstance(got, tuple):
        expected = tuple(good)
    elif isinstance(good, list):
        expected = good[0]
    assert got == expected
    assert problems_of(with_value(ROUTER, key, bad), router_config.parse_router) == [message]


def test_the_router_defaults_whole() -> None:
    c = router_config.parse_router(ROUTER, "r.yaml")
    assert (c.tag, c.when_all_down, c.runtime_dir, c.state_dir, c.control, c.metrics, c.source) == (
        5353,
        "keep",
        Path("/run/anycastd"),
        router_config.DEFAULT_ROUTER_STATE_DIR,
        ControlSettings(),
        None,
        "r.yaml",
    )
    assert c.vtysh == router_config.VtyshSettings(("vtysh",), 5.0, 10.0, "vty")
    assert c.vtysh.vty_dir == Path("/var/run/frr")  # FRR's own default, where vtysh looks too

    dns = c.services[0]
    assert dns.damping == DampingSettings() and dns.checks == (Check(TEMPLATE_ADDRESS, probe_service_addresses=False),)
    assert dns.servers[0].nexthops == (ipaddress.ip_address("192.0.2.2"),)
    assert router_config.parse_router(ROUTER).source == "<config>"
    assert router_config.parse_router("router:\n" + ROUTER).tag == 5353  # an empty router: section is the defaults


# the reader's own edges (anycastd.config.yamlfile) ------------------------------------------------------------------------

from anycastd.config import yamlfile  # noqa: E402 (kept beside the tests that use it)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "nothing"),
        ({}, "a mapping"),
        ([], "a list"),
        ("x", "a string"),
        (True, "a boolean"),
        (1.5, "float"),
        (3, "int"),
    ],
)
def test_kind_names_each_yaml_value(value: Any, shown: str) -> None:
    assert yamlfile.kind(value) == shown


@pytest.mark.parametrize(
    ("convert", "value", "message"),
    [
        (yamlfile.whole(1, 10), 2**198, f"must be between 1 and 10, got {2**198}"),  # 60 digits: shown whole
        (yamlfile.whole(1, 10), 2**199, "must be between 1 and 10, got a number of more than 60 digits"),
        (yamlfile.whole(1, 10), True, "must be a whole number, got True"),
        (yamlfile.seconds(0, 10), 10.5, "must be at most 10 seconds, got 10.5"),
        (yamlfile.text, "", "must be a non-empty string, got ''"),
        (
            yamlfile.text,
            "\x00" + "y" * 70,
            "must be printable text without control characters, got " + repr("\x00" + "y" * 70)[:57] + "...",
        ),
        (yamlfile.absolute_path, "/" + "p" * 4000, "is longer than 4000 characters"),
    ],
)
def test_converters_say_exactly_what_is_wrong(convert: Callable[[Any], Any], value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        convert(value)
    assert str(info.value) == message


def test_shown_values_are_cut_at_60_characters() -> None:
    assert yamlfile.shown("a" * 58) == repr("a" * 58)  # 60 with its quotes: whole
    assert yamlfile.shown("a" * 59) == repr("a" * 59)[:57] + "..."
    assert yamlfile.absolute_path("/" + "p" * 3999) == Path("/" + "p" * 3999)
    assert yamlfile.whole(1, 10)(10) == 10 and yamlfile.seconds(0, 10)(10) == 10.0


def test_to_command_takes_up_to_64_words() -> None:

    assert len(to_command(["/bin/x"] * 64)) == 64
    for bad, shown in ((["/bin/x"] * 65, "a list"), ([], "a list"), ({"a": 1}, "a mapping")):
        with pytest.raises(ValueError) as info:
            to_command(bad)
        assert str(info.value) == f"must be a list of 1 to 64 strings (program and arguments), got {shown}"


def test_read_text_takes_exactly_max_bytes_and_places_a_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"#" * yamlfile.MAX_BYTES)
    assert len(yamlfile.read_text(path)) == yamlfile.MAX_BYTES
    path.write_bytes(b"#" * (yamlfile.MAX_BYTES + 1))
    with pytest.raises(ConfigError) as info:
        yamlfile.read_text(path)
    assert info.value.problems == [f"{path}: larger than 1024 KiB; this is not an anycastd configuration"]
    path.write_bytes("a: é\nbb: \xff".encode("utf-8", "surrogateescape") if False else b"a: \xc3\xa9\nbb: \xff\n")
    with pytest.raises(ConfigError) as info:
        yamlfile.read_text(path)
    assert info.value.problems[0].startswith(f"{path}:2:5: ")
    with pytest.raises(ConfigError) as info:
        yamlfile.read_text(tmp_path / "missing.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'missing.yaml'}: cannot read the configuration: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "a:\n  <<: {b: 2}\n",
            "f.yaml:2:3: merge keys (<<) are not accepted (YAML 1.2 dropped them); write the keys "
            "out, or give a whole value an anchor (&name) and reuse it (*name)",
        ),
        ("a:\n  ? [x]\n  : 1\n", "f.yaml:2:5: keys must be strings, not maps or lists"),
        (
            "a:\n   b: !!python/name:os.system x\n",
            "f.yaml:2:7: YAML tags such as 'tag:yaml.org,2002:python/name:os.system' are not accepted; write the "
            "plain value without a tag",
        ),
    ],
)
def test_refusals_point_at_line_and_column(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        yamlfile.Reader("f.yaml").document(text)
    assert info.value.problems[0].startswith(problem)


def test_a_problem_under_a_list_item_is_placed_at_the_item() -> None:
    r = yamlfile.Reader("f.yaml")
    r.document("top:\n  list:\n    - x\n    - {deep: 1}\n")
    r.problem("top.list[1].deep.missing", "m")
    r.problem("top.list[0]", "n")
    r.problem("nowhere.at.all", "o")
    assert r.problems == [
        "f.yaml:4:8: top.list[1].deep.missing: m",
        "f.yaml:3:7: top.list[0]: n",
        "f.yaml:1:1: nowhere.at.all: o",
    ]


def test_a_non_string_key_is_named_and_the_rest_is_still_read() -> None:
    r = yamlfile.Reader("f.yaml")
    assert r.document("a:\n  1: x\n  b: y\n") == {"a": {"b": "y"}}
    assert r.problems == ["f.yaml:2:3: a.1: keys must be strings, got 1"]


def sidecar_problems(text: str) -> list[str]:
    return problems_of(text, config.parse)


def test_the_hold_time_is_a_whole_number_first() -> None:
    for value in (2**31 + 1, -(2**31) - 1, -100):
        message = sidecar_problems(with_value(GOOD, ["neighbors", 0, "hold_time"], value))[0]
        if value == -100:
            assert message.endswith("got -100")
        else:
            assert message == f"neighbors[0].hold_time: must be between -2147483648 and 2147483648, got {value}"


@pytest.mark.parametrize(
    ("password", "good"), [("a", True), ("!~", True), ("", False), ("a b", False), ("a\x7f", False)]
)
def test_md5_passwords_are_1_to_80_visible_ascii_characters(password: str, good: bool) -> None:
    text = with_value(GOOD, ["neighbors", 0, "md5_password"], password)
    if good:
        assert config.parse(text).neighbors[0].md5_password == password
    else:
        assert sidecar_problems(text) == [
            "neighbors[0].md5_password: must be 1 to 80 printable ASCII characters without spaces (the TCP MD5 key "
            "limit)"
        ]


def test_every_bad_neighbor_and_server_is_reported_not_only_the_first() -> None:
    text = with_value(GOOD, ["neighbors"], [{"address": "x", "peer_asn": 1, "local_address": "192.0.2.10"}] * 2)
    assert sidecar_problems(text) == [
        "neighbors[0].address: must be an IPv4 or IPv6 address, got 'x'",
        "neighbors[1].address: must be an IPv4 or IPv6 address, got 'x'",
    ]
    servers = with_value(ROUTER, ["services", "dns", "servers"], [{"name": "a", "address": "x"}] * 2)
    assert problems_of(servers, router_config.parse_router) == [
        "services.dns.servers[0].address: must be an IPv4 or IPv6 address, got 'x'",
        "services.dns.servers[1].address: must be an IPv4 or IPv6 address, got 'x'",
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (["neighbors", 0, "bogus"], 1, "neighbors[0].bogus: unknown key (expected one of: address, bfd, gtsm, "
         "hold_time, local_address, md5_password, peer_asn)"),
        (["neighbors", 0, "bfd", "echo"], 1, "neighbors[0].bfd.echo: unknown key (expected one of: damping, interval, "
         "multiplier)"),
        (["neighbors", 0, "bfd", "interval"], True, "neighbors[0].bfd.interval: must be a number of seconds, got True"),
        (["neighbors", 0, "bfd"], {"interval": float("nan")}, "neighbors[0].bfd.interval: must be a number of "
         "seconds, got nan"),
        (["neighbors", 0, "bfd"], {"multiplier": 3.5}, "neighbors[0].bfd.multiplier: must be a whole number, got 3.5"),
        (["services", "dns", "prefixes", 0], "203.0.113.0/24", "services.dns.prefixes[0]: 203.0.113.0/24 is not a host "
         "route (/32 or /128); set allow_non_host_prefixes: true if you mean it"),
        (["neighbors"], [], "neighbors: must be a non-empty list of BGP neighbors, got a list"),
        (["router"], {}, "router: this is an `anycastd router` configuration: check it with `anycastd check-config "
         "--router FILE`, run it with `anycastd router --config FILE`"),
    ],
)  # fmt: skip
def test_sidecar_problems_in_their_exact_words(key: Key, value: Any, message: str) -> None:
    assert sidecar_problems(with_value(GOOD, key, value)) == [message]


def test_a_bad_service_name_is_named() -> None:
    text = GOOD.replace("  dns:\n", "  -dns:\n")
    assert sidecar_problems(text) == [
        "services.-dns: service names are 1 to 63 letters, digits, '_', '.', '-', starting with a letter or digit"
    ]
    router = ROUTER.replace("  dns:\n", "  -dns:\n")
    assert problems_of(router, router_config.parse_router) == [
        "services.-dns: service names are 1 to 63 letters, digits, '_', '.', '-', starting with a letter or digit"
    ]


def test_non_host_prefixes_when_allowed() -> None:
    sidecar = with_value(with_value(GOOD, ["services", "dns", "allow_non_host_prefixes"], True),
                         ["services", "dns", "prefixes", 0], "203.0.113.0/24")  # fmt: skip
    assert str(config.parse(sidecar).services[0].prefixes[0]) == "203.0.113.0/24"
    router = with_value(with_value(ROUTER, ["services", "dns", "allow_non_host_prefixes"], True),
                        ["services", "dns", "prefixes", 0], "203.0.113.0/24")  # fmt: skip
    assert str(router_config.parse_router(router).services[0].prefixes[0]) == "203.0.113.0/24"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (["services", "dns", "servers", 0, "bogus"], 1, "services.dns.servers[0].bogus: unknown key (expected one "
         "of: address, name, nexthops, weight)"),
        (["services", "dns", "bogus"], 1, "services.dns.bogus: unknown key (expected one of: allow_non_host_prefixes, "
         "checks, damping, prefixes, require, servers)"),
        (["services", "dns", "servers"], {}, "services.dns.servers: must be a non-empty list of servers, got a "
         "mapping"),
        (["services", "dns", "servers", 0, "name"], 5, "services.dns.servers[0].name: must be a non-empty string, "
         "got 5"),
        (["services", "dns", "checks", 0, "probe_service_addresses"], True, "services.dns.checks[0]."
         "probe_service_addresses: unknown key (expected one of: answer, degraded_when, dnssec, fall, fall_hard, interval, kind, "
         "path, port, protocol, qname, qtype, rcode, reuse, rise, timeout, tls, transport)"),
    ],
)  # fmt: skip
def test_router_problems_in_their_exact_words(key: Key, value: Any, message: str) -> None:
    assert problems_of(with_value(ROUTER, key, value), router_config.parse_router) == [message]


# the rest of what `make mutation` found untested -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (["services", "dns", "checks"], [], "services.dns.checks: must be a non-empty list of checks, got a list"),
        (["services", "dns", "prefixes"], [], "services.dns.prefixes: must be a non-empty list of prefixes, got a list"),
        (["services", "dns", "prefixes"], ["x", "y"], "services.dns.prefixes[0]: must be a prefix with a length such as "
         "203.0.113.53/32, got 'x'|services.dns.prefixes[1]: must be a prefix with a length such as 203.0.113.53/32, "
         "got 'y'"),
        (["services", "dns", "prefixes"], ["203.0.113.53/32", "203.0.113.53/32"], "services.dns.prefixes[1]: "
         "203.0.113.53/32 is listed twice"),
        (["services", "dns", "prefixes", 0], "192.0.2.10/32", "services.dns.prefixes[0]: 192.0.2.10/32 contains the "
         "admin address 192.0.2.10 (neighbors[0].local_address); the service address must differ"),
        (["services"], [], "services: must be a mapping of service name to service, got a list"),
        (["metrics"], True, "metrics: must be a mapping, got a boolean"),
        (["metrics"], {"bogus": 1}, "metrics.bogus: unknown key (expected one of: address, port)"),
        (["control"], {"bogus": 1}, "control.bogus: unknown key (expected one of: group, socket)"),
        ([*CHECK, "timeout"], 60.5, "services.dns.checks[0].timeout: must be at most 60 seconds, got 60.5"),
    ],
)  # fmt: skip
def test_more_sidecar_problems_in_their_exact_words(key: Key, value: Any, message: str) -> None:
    text = with_value(GOOD, key, value)
    if key[-1] == "timeout":
        text = with_value(text, [*CHECK, "interval"], 100)
    assert sidecar_problems(text) == message.split("|")


def test_metrics_false_is_off_and_the_lowest_bounds_are_open() -> None:
    assert config.parse(with_value(GOOD, ["metrics"], False)).metrics is None
    low = with_value(GOOD, ["drain"], {"timeout": 0.5, "fallback": 0.5, "grace": 0.5, "quiet": 0.5})
    assert config.parse(low).drain == config.DrainSettings(0.5, 0.5, 0.5, 0.5)
    damped = with_value(GOOD, ["services", "dns", "damping"], {"max_suppress": 0.5, "half_life": 0.5})
    assert config.parse(damped).services[0].damping == DampingSettings(half_life=0.5, max_suppress=0.5)


def test_unknown_names_are_said_in_the_key_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        config.parse(GOOD).service("nope")
    with pytest.raises(KeyError, match="nope"):
        router_config.parse_router(ROUTER).service("nope")


def test_load_router_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(ROUTER)
    assert router_config.load_router(path).source == str(path)


def test_a_router_service_without_checks_gets_the_default_check() -> None:
    text = with_value(
        ROUTER,
        ["services", "dns"],
        {"prefixes": ["203.0.113.53/32"], "servers": [{"name": "a", "address": "192.0.2.2"}]},
    )
    assert router_config.parse_router(text).services[0].checks == (
        Check(TEMPLATE_ADDRESS, probe_service_addresses=False),
    )


ONE = {"name": "ns1", "address": "192.0.2.2"}
INSIDE = (
    "services.dns.servers[0]: 203.0.113.53 is inside the service prefix 203.0.113.53/32; the server's own addresses "
    "must differ from the service address"
)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (["services", "dns", "prefixes", 0], "203.0.113.0/24", "services.dns.prefixes[0]: 203.0.113.0/24 is not a "
         "host route (/32 or /128); set allow_non_host_prefixes: true if you mean it"),
        (["services", "dns", "checks"], [], "services.dns.checks: must be a non-empty list of checks, got a list"),
        (["services", "dns", "servers"], [ONE, ONE], "services.dns.servers[1].name: server 'ns1' is listed twice in "
         "this service"),
        (["services", "dns", "servers"], [ONE, {**ONE, "name": "ns2"}], "services.dns.servers[1].address: 192.0.2.2 "
         "is already the address of server 'ns1'"),
        (["services", "dns", "servers", 0, "address"], "203.0.113.53", "|".join([INSIDE] * 2)),  # address, nexthop
        (["services", "dns", "servers", 0, "nexthops"], ["x", "y"], "services.dns.servers[0].nexthops[0]: must be an "
         "IPv4 or IPv6 address, got 'x'|services.dns.servers[0].nexthops[1]: must be an IPv4 or IPv6 address, got 'y'"),
        (["services", "dns", "servers", 0, "nexthops"], ["192.0.2.2", "192.0.2.3", "192.0.2.4"], "services.dns."
         "servers[0].nexthops[1]: a second IPv4 nexthop; give one per family|services.dns.servers[0].nexthops[2]: a "
         "second IPv4 nexthop; give one per family"),
        (["services", "other"], {"prefixes": ["203.0.113.53/32"], "servers": [ONE]}, "services.other.prefixes[0]: "
         "203.0.113.53/32 is already a prefix of service 'dns'"),
    ],
)  # fmt: skip
def test_more_router_problems_in_their_exact_words(key: Key, value: Any, message: str) -> None:
    assert problems_of(with_value(ROUTER, key, value), router_config.parse_router) == message.split("|")


def test_a_problem_is_placed_by_the_nearest_key_it_has() -> None:
    r = yamlfile.Reader("f.yaml")
    assert r.problems == [] and r.document("\na:\n  - b:\n      - x\n  - 1\nservices: 2\n")
    r.problem("a[0].b[5]", "m")  # b's own place, not a[0]'s: the last '[' counts
    r.problem("a.zz", "n")  # a one-letter key is still a key
    r.problem("servicesX", "o")  # a name is not shortened into another one: the root
    assert r.problems == ["f.yaml:3:5: a[0].b[5]: m", "f.yaml:2:1: a.zz: n", "f.yaml:2:1: servicesX: o"]
    bare = yamlfile.Reader("g.yaml")  # nothing read yet: no place to give
    bare.problem("x", "p")
    assert bare.problems == ["g.yaml: x: p"]


def test_the_last_gaps_make_mutation_found_in_the_readers() -> None:
    admin = with_value(
        with_value(GOOD, [*CHECK, "address"], "192.0.2.99"), ["services", "dns", "prefixes", 0], "192.0.2.99/32"
    )
    assert sidecar_problems(admin) == [
        "services.dns.prefixes[0]: 192.0.2.99/32 contains the admin address 192.0.2.99 "
        "(services.dns.checks[0].address); the service address must differ"
    ]
    assert sidecar_problems(with_value(GOOD, ["exabgp"], {"bogus": 1})) == [
        "exabgp.bogus: unknown key (expected one of: command, stall, watchdog)"
    ]
    assert sidecar_problems(with_value(GOOD, ["exabgp"], {"watchdog": 60, "stall": 60.5})) == [
        "exabgp.stall: must be at most 60 seconds, got 60.5"
    ]
    twice = yaml.safe_load(GOOD)["neighbors"][0]
    assert sidecar_problems(with_value(GOOD, ["neighbors"], [twice, twice])) == [
        "neighbors[1].address: neighbor 192.0.2.9 is listed twice"
    ]


def test_places_of_duplicate_keys_and_of_keys_inside_list_items() -> None:
    r = yamlfile.Reader("f.yaml")
    r.document("first: 0\na:\n  - c: 1\n    b:\n      - x\n  - 1\na: 2\n")
    r.problem("a[0].b[5]", "m")  # b's own place (line 4), not a[0]'s (line 3): the last '[' counts
    r.problem("a.zz", "n")  # a one-letter key is still a key: a's (last) place, not the file's first line
    assert r.problems == [
        "f.yaml:7:1: a: duplicate key (each name may appear once)",
        "f.yaml:4:5: a[0].b[5]: m",
        "f.yaml:7:1: a.zz: n",
    ]


def refused(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        yamlfile.Reader("f.yaml").document(text)
    return info.value.problems


def test_the_deepest_nesting_allowed_reads_and_an_alias_inside_itself_is_refused() -> None:
    deepest = "[" * 30 + "{a: 1}" + "]" * 30  # 32 levels with the 1: the limit itself
    value: Any = yamlfile.Reader("f.yaml").document(deepest)
    for _ in range(30):
        value = value[0]
    assert value == {"a": 1}
    assert refused("a: &x {b: *x}\n") == ["f.yaml:1:4: an alias refers to a value that contains it"]
    assert refused("a: &x [*x]\n") == ["f.yaml:1:4: an alias refers to a value that contains it"]


def test_exactly_max_values_read() -> None:
    items = yamlfile.MAX_VALUES - 1  # and the list itself
    assert len(yamlfile.Reader("f.yaml").document("[" + ",".join(["1"] * items) + "]")) == items
    assert refused("[" + ",".join(["1"] * (items + 1)) + "]")[0].startswith("f.yaml:1:")


def test_a_number_python_cannot_build_is_named_with_its_place() -> None:
    r = yamlfile.Reader("f.yaml")
    assert r.document("first: 1\na:\n  b: 0b_\n  c: 0b" + "_" * 50 + "\n") == {"first": 1, "a": {"b": None, "c": None}}
    r.problem("first.q", "o")  # a key's place survives the reading of its value
    assert r.problems == [
        "f.yaml:3:6: a.b: '0b_' is not a number",
        "f.yaml:4:6: a.c: " + repr("0b" + "_" * 38) + " is not a number",
        "f.yaml:1:1: first.q: o",
    ]
    bare = yamlfile.Reader("f.yaml")
    assert bare.document("0b_\n") is None and bare.problems == ["f.yaml:1:1: value: '0b_' is not a number"]


def test_a_character_yaml_forbids_is_named_by_its_code() -> None:
    assert refused("a: 1\nb: \x01\n") == ["f.yaml:2:4: a character YAML does not allow (0x1); remove it"]


def test_a_deep_mapping_reads_and_the_non_specific_tag_is_plain() -> None:
    deepest: Any = yamlfile.Reader("f.yaml").document("{a: " * 31 + "1" + "}" * 31)  # 32 levels with the 1
    for _ in range(31):
        deepest = deepest["a"]
    assert deepest == 1
    assert yamlfile.Reader("f.yaml").document("a: ! x\n") == {"a": "x"}  # `!` only says "not a number"


@pytest.mark.parametrize(
    ("command", "where"),
    [
        (("vtysh", "--vty_socket", "/run/lab"), "/run/lab"),
        (("/usr/bin/vtysh", "--vty_socket=/run/lab"), "/run/lab"),
        (("vtysh", "--vty_socket"), "/var/run/frr"),  # no directory given after it: FRR's default
        (("vtysh", "-N", "blue"), "/var/run/frr/blue"),  # a pathspace: FRR's directory of that name
        (("vtysh", "-Nblue"), "/var/run/frr/blue"),
        (("vtysh", "--pathspace", "blue"), "/var/run/frr/blue"),
        (("vtysh", "--pathspace=blue"), "/var/run/frr/blue"),
        (("vtysh", "-N", "blue", "--vty_socket", "/run/lab"), "/run/lab"),  # as vtysh: the socket path wins
        (("vtysh", "-N", "red", "-N", "blue"), "/var/run/frr/blue"),  # the last one, as getopt
    ],
)
def test_the_vty_sockets_are_where_vtysh_is_told_to_look(command: tuple[str, ...], where: str) -> None:
    assert router_config.VtyshSettings(command).vty_dir == Path(where)


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", "-x"])
def test_a_pathspace_must_be_one_directory_under_frrs(name: str) -> None:
    text = with_value(ROUTER, ["router", "vtysh"], ["vtysh", "-N", name])
    [problem] = problems_of(text, router_config.parse_router)
    assert problem.startswith(f"router.vtysh: names the pathspace {name!r}, which is not one directory name")


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        (["neighbors", 0, "address"], "fe80::1%eth0", "neighbors[0].address"),
        (["neighbors", 1, "local_address"], "2001:db8:0:1::2%eth1", "neighbors[1].local_address"),
        ([*CHECK, "address"], "fe80::53%lo", "services.dns.checks[0].address"),
        (["metrics", "address"], "fe80::1%eth0", "metrics.address"),
    ],
)
def test_a_zone_id_is_refused_in_every_address_field(key: Key, value: str, path: str) -> None:
    zone = value.partition("%")[2]
    assert problems_of(with_value(GOOD, key, value), config.parse) == [
        f"{path}: must not carry a zone id (%{zone}): ExaBGP, FRR and the kernel's routes take plain addresses. "
        "Use a global address (a link-local BGP neighbor or server is not supported)"
    ]


def test_a_zone_id_is_refused_in_a_prefix_and_in_the_routers_addresses() -> None:
    text = with_value(GOOD, ["services", "dns", "prefixes", 1], "2001:db8::53%eth0/128")
    [problem] = problems_of(text, config.parse)
    assert problem.startswith("services.dns.prefixes[1]: must not carry a zone id (%eth0)")
    assert "given it without one" not in problem and "interface (services.NAME.interface)" in problem
    router = with_value(ROUTER, ["services", "dns", "servers", 0, "address"], "fe80::2%eth0")
    router = with_value(router, ["services", "dns", "servers", 0, "nexthops"], ["fe80::2%eth0"])
    assert [p.split(":", 1)[0] for p in problems_of(router, router_config.parse_router)] == [
        "services.dns.servers[0].address",
        "services.dns.servers[0].nexthops[0]",
    ]


def test_a_prepend_over_ibgp_is_refused_with_the_neighbor_named() -> None:
    text = with_value(with_value(GOOD, ["services", "dns", "bgp", "as_path_prepend"], 2), ["local_asn"], 65000)
    assert problems_of(text, config.parse) == [
        "services.dns.bgp.as_path_prepend: needs eBGP neighbors, but neighbors[0], neighbors[1] are iBGP "
        "(peer_asn 65000 = local_asn): the router would see its own AS on the path and drop it"
    ]


# Named by the mutants of `make mutation` they kill: the readers added with BFD, the return path and
# vtysh's pathspace, each bound and each path in its message.


def test_one_ibgp_neighbor_is_named_in_the_singular() -> None:
    text = with_value(with_value(GOOD, ["services", "dns", "bgp", "as_path_prepend"], 2), ["local_asn"], 65000)
    text = with_value(text, ["neighbors", 1, "peer_asn"], 65100)
    assert problems_of(text, config.parse) == [
        "services.dns.bgp.as_path_prepend: needs eBGP neighbors, but neighbors[0] is iBGP "
        "(peer_asn 65000 = local_asn): the router would see its own AS on the path and drop it"
    ]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (["services", "dns", "bgp"], 5, "services.dns.bgp: must be a mapping, got int"),
        (["bfdd"], 5, "bfdd: must be a mapping, got int"),
        (["neighbors"], 5, "neighbors: must be a non-empty list of BGP neighbors, got int"),
        (["return_path"], 5, "return_path: must be a mapping, got int"),
    ],
)
def test_a_section_of_the_wrong_kind_is_named_by_its_path(key: Key, value: Any, problem: str) -> None:
    assert problems_of(with_value(GOOD, key, value), config.parse) == [problem]


def test_every_bad_return_prefix_is_named_and_the_bound_is_inclusive() -> None:
    bad = {"prefixes": ["x", "198.51.100.0/24", "y"]}
    assert problems_of(with_value(GOOD, ["return_path"], bad), config.parse) == [
        "return_path.prefixes[0]: must be a prefix with a length such as 203.0.113.53/32, got 'x'",
        "return_path.prefixes[2]: must be a prefix with a length such as 203.0.113.53/32, got 'y'",
    ]
    most = [f"198.51.100.{i * 4}/30" for i in range(config.MAX_RETURN_PREFIXES)]
    parsed = config.parse(with_value(GOOD, ["return_path"], {"prefixes": most}))
    assert parsed.return_path is not None
    assert len(parsed.return_path.prefixes) == config.MAX_RETURN_PREFIXES and parsed.return_path.metric == 0
    over = {"prefixes": [*most, "198.51.100.128/30"]}
    assert problems_of(with_value(GOOD, ["return_path"], over), config.parse) == [
        f"return_path.prefixes: must list at most {config.MAX_RETURN_PREFIXES} prefixes, "
        f"got {config.MAX_RETURN_PREFIXES + 1}"
    ]


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (("vtysh", "--vty_socket=/run/lab"), {"--vty_socket": "/run/lab"}),
        (("vtysh", "--pathspace=a=b"), {"-N": "a=b"}),  # the value is all after the first '='
        (("vtysh", "--vty_socket=/run/a=b"), {"--vty_socket": "/run/a=b"}),
        (("vtysh", "-d", "staticd", "-c", "show version"), {}),  # nothing about where the sockets are
        (("vtysh", "-N"), {}),  # no value after it
        (("vtysh", "-Nred", "--pathspace", "blue"), {"-N": "blue"}),
    ],
)
def test_vtysh_options_read_as_getopt_does(argv: tuple[str, ...], options: dict[str, str]) -> None:
    assert router_config.vtysh_options(argv) == options


def test_a_pathspace_beside_a_socket_directory_is_not_looked_at_and_a_long_one_is_cut_in_the_message() -> None:
    text = with_value(ROUTER, ["router", "vtysh"], ["vtysh", "-N", "../x", "--vty_socket", "/run/lab"])
    assert router_config.parse_router(text).vtysh.vty_dir == Path("/run/lab")
    long = "../" + "x" * 60
    [problem] = problems_of(with_value(ROUTER, ["router", "vtysh"], ["vtysh", "-N", long]), router_config.parse_router)
    assert problem.startswith(f"router.vtysh: names the pathspace {long[:40]!r}, which is not")


def test_a_zone_id_is_shown_from_its_first_percent_sign_and_cut_at_16_characters() -> None:
    [problem] = problems_of(with_value(GOOD, ["neighbors", 0, "address"], "fe80::1%eth0%x"), config.parse)
    assert problem.startswith("neighbors[0].address: must not carry a zone id (%eth0%x)")
    [problem] = problems_of(with_value(GOOD, ["neighbors", 0, "address"], "fe80::1%" + "e" * 20), config.parse)
    assert problem.startswith(f"neighbors[0].address: must not carry a zone id (%{'e' * 16})")


def test_two_sidecar_services_cannot_announce_one_prefix() -> None:
    # each would announce it on its own verdict, and the first to fail would withdraw it from the other
    other = {"prefixes": ["203.0.113.54/32", "2001:db8::53/128"], "checks": [{"address": "192.0.2.10"}]}
    assert problems_of(with_value(GOOD, ["services", "other"], other), config.parse) == [
        "services.other.prefixes[1]: 2001:db8::53/128 is already a prefix of service 'dns'"
    ]


# soft degradation (degraded_when on a check, degraded_weight on the service) ----------------------------------

DEGRADABLE = with_value(
    with_value(with_value(GOOD, ["services", "dns", "weight"], 10), ["services", "dns", "degraded_weight"], 2),
    [*CHECK, "degraded_when"],
    {"latency_ms": 50},
)


def test_degraded_when_reads_with_its_defaults_and_the_weights() -> None:
    dns = config.parse(DEGRADABLE).services[0]
    assert dns.checks[0].degraded_when == LatencyRule(50.0, 40.0, 5)
    assert (dns.bgp.weight, dns.degraded_weight) == (10, 2)
    full = with_value(DEGRADABLE, [*CHECK, "degraded_when"], {"latency_ms": 20, "recover_ms": 5, "window": 100})
    assert config.parse(full).services[0].checks[0].degraded_when == LatencyRule(20.0, 5.0, 100)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (["services", "dns", "degraded_weight"], 10, "services.dns.degraded_weight: must be below weight (10), got 10"),
        (["services", "dns", "degraded_weight"], 0, "services.dns.degraded_weight: must be between 1 and 1000, got 0"),
        (
            [*CHECK, "degraded_when"],
            {"latency_ms": 250},
            "services.dns.checks[0].degraded_when.latency_ms: must be "
            "below the check's timeout (250 ms), got 250: a probe that slow fails",
        ),
        (
            [*CHECK, "degraded_when"],
            {"latency_ms": 50, "recover_ms": 50},
            "services.dns.checks[0].degraded_when"
            ".recover_ms: must be below latency_ms (50), got 50: the gap is what keeps an edge case steady",
        ),
        (
            [*CHECK, "degraded_when"],
            {"latency_ms": 0},
            "services.dns.checks[0].degraded_when.latency_ms: must be above 0 and at most 60000 ms, got 0",
        ),
        (
            [*CHECK, "degraded_when"],
            {"latency_ms": "fast"},
            "services.dns.checks[0].degraded_when.latency_ms: must be a number of milliseconds, got 'fast'",
        ),
        (
            [*CHECK, "degraded_when"],
            {"latency_ms": 50, "window": 101},
            "services.dns.checks[0].degraded_when.window: must be between 1 and 100, got 101",
        ),
        (
            [*CHECK, "degraded_when"],
            {"median": 50},
            "services.dns.checks[0].degraded_when.median: unknown key "
            "(expected one of: latency_ms, recover_ms, window)",
        ),
    ],
)
def test_degradation_bounds(key: Key, value: Any, message: str) -> None:
    problems = problems_of(with_value(DEGRADABLE, key, value), config.parse)
    assert problems[0] == message
    assert problems[1:] in ([], ["services.dns.checks[0].degraded_when: missing required key 'latency_ms'"])


def test_degradation_needs_both_halves_and_a_weight() -> None:
    no_weight = yaml_without(DEGRADABLE, ["services", "dns", "weight"])
    assert problems_of(no_weight, config.parse) == [
        "services.dns.degraded_weight: needs weight: degradation lowers the service's weight to this"
    ]
    no_degraded_weight = yaml_without(DEGRADABLE, ["services", "dns", "degraded_weight"])
    assert problems_of(no_degraded_weight, config.parse) == [
        "services.dns.checks[0].degraded_when: needs the service's degraded_weight (and weight): the weight its "
        "path carries while degraded"
    ]
    no_rule = yaml_without(DEGRADABLE, [*CHECK, "degraded_when"])
    assert problems_of(no_rule, config.parse) == [
        "services.dns.degraded_weight: no check of the service has degraded_when, so it would never apply"
    ]


def test_a_command_check_degrades_on_exit_codes_and_the_router_refuses_degraded_when() -> None:
    command = yaml_without(with_value(DEGRADABLE, [*CHECK, "kind"], "command"), [*CHECK, "qname"])
    for key in ("qtype", "answer", "address"):
        command = yaml_without(command, [*CHECK, key])
    command = with_value(command, [*CHECK, "command"], ["true"])
    assert "services.dns.checks[0].degraded_when.latency_ms: unknown key (expected one of: exit_codes, window)" in (
        problems_of(command, config.parse)
    )
    command = with_value(command, [*CHECK, "degraded_when"], {"exit_codes": [4, 2, 4]})
    assert config.parse(command).services[0].checks[0].degraded_when == ExitRule((2, 4), 3)
    for bad, message in [
        ([0], "each must be an exit code from 1 to 255 (0 is healthy), got [0]"),
        ([], "must list 1 to 16 exit codes, got 0"),
        ("2", "must be a list of 1 to 16 exit codes, got a string"),
    ]:
        text = with_value(command, [*CHECK, "degraded_when"], {"exit_codes": bad})
        assert problems_of(text, config.parse) == [f"services.dns.checks[0].degraded_when.exit_codes: {message}"]
    router = with_value(
        ROUTER, ["services", "dns", "checks"], [{"qname": "x.example", "degraded_when": {"latency_ms": 5}}]
    )
    assert problems_of(router, router_config.parse_router) == [
        "services.dns.checks[0].degraded_when: lowers a BGP path's weight, and `anycastd router`'s static routes "
        "weigh the same (FRR's staticd); the sidecar takes it"
    ]


def yaml_without(text: str, key: Key) -> str:
    data = yaml.safe_load(text)
    node = data
    for part in key[:-1]:
        node = node[part]
    del node[key[-1]]
    return yaml.safe_dump(data, sort_keys=False)


# Named by the mutants of `make mutation` they kill.


def test_degraded_when_windows_codes_and_milliseconds_at_their_edges() -> None:
    assert yamlfile.milliseconds(0.5) == 0.5 and yamlfile.milliseconds(60_000) == 60_000.0
    for bad in (0, 60_000.5, float("nan"), True):
        with pytest.raises(ValueError):
            yamlfile.milliseconds(bad)
    bad_recover = with_value(DEGRADABLE, [*CHECK, "degraded_when"], {"latency_ms": 50, "recover_ms": "x"})
    assert problems_of(bad_recover, config.parse) == [
        "services.dns.checks[0].degraded_when.recover_ms: must be a number of milliseconds, got 'x'"
    ]
    command = yaml_without(with_value(DEGRADABLE, [*CHECK, "kind"], "command"), [*CHECK, "qname"])
    for key in ("qtype", "answer", "address"):
        command = yaml_without(command, [*CHECK, key])
    command = with_value(command, [*CHECK, "command"], ["true"])

    def rule(value: dict[str, Any]) -> Any:
        return config.parse(with_value(command, [*CHECK, "degraded_when"], value)).services[0].checks[0].degraded_when

    assert rule({"exit_codes": [1, 255], "window": 1}) == ExitRule((1, 255), 1)
    assert rule({"exit_codes": list(range(1, 17)), "window": 100}) == ExitRule(tuple(range(1, 17)), 100)
    for value, message in [
        ({"exit_codes": list(range(1, 18))}, "exit_codes: must list 1 to 16 exit codes, got 17"),
        ({"exit_codes": [256]}, "exit_codes: each must be an exit code from 1 to 255 (0 is healthy), got [256]"),
        ({"exit_codes": [True]}, "exit_codes: each must be an exit code from 1 to 255 (0 is healthy), got [True]"),
        ({"exit_codes": [2], "window": 0}, "window: must be between 1 and 100, got 0"),
        ({"exit_codes": [2], "window": "x"}, "window: must be a whole number, got 'x'"),
    ]:
        text = with_value(command, [*CHECK, "degraded_when"], value)
        assert problems_of(text, config.parse) == [f"services.dns.checks[0].degraded_when.{message}"]
