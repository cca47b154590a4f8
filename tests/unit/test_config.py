"""Configuration: a valid file loads; each kind of mistake is named with file:line and key path."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from anycastd.config.sidecar import DEFAULT_INTERFACE, load, parse
from anycastd.core.damping import DampingSettings
from anycastd.errors import ConfigError
from tests.helpers import GOOD


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, "anycastd.yaml")
    return info.value.problems


def test_good_config_loads_with_defaults() -> None:
    c = parse(GOOD, "anycastd.yaml")
    assert c.router_id == ipaddress.IPv4Address("192.0.2.10")
    assert [str(n.address) for n in c.neighbors] == ["192.0.2.9", "2001:db8:0:1::1"]
    assert c.neighbors[0].hold_time == 3 and c.neighbors[1].md5_password == "s3cret"
    dns = c.service("dns")
    assert dns.interface == DEFAULT_INTERFACE
    assert [str(a) for a in dns.host_addresses] == ["203.0.113.53", "2001:db8::53"]
    check = dns.checks[0]
    assert (check.qname, check.qtype, check.rcode, check.transport) == ("health.example.", "TXT", "NOERROR", "udp")
    assert (check.interval, check.timeout, check.rise, check.fall, check.fall_hard) == (0.5, 0.25, 3, 3, 1)
    with pytest.raises(KeyError):
        c.service("nope")


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "anycastd.yaml"
    path.write_text(GOOD)
    assert load(path).source == str(path)


def test_load_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load(tmp_path / "missing.yaml")


def test_load_rejects_binary(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # the example in the issue, to the letter
        ("timeout: 0.25", "timeout: -1", "anycastd.yaml:20:9: services.dns.checks[0].timeout: must be > 0, got -1"),
        (
            "timeout: 0.25",
            "timeout: 0.5",
            "anycastd.yaml:20:9: services.dns.checks[0].timeout: must be smaller than the interval (0.5 s), got 0.5",
        ),
        ("timeout: 0.25", "timeout: 0.75", "services.dns.checks[0].timeout: must be smaller than the interval"),
        (
            "203.0.113.53/32,",
            "203.0.113.0/24,",
            "anycastd.yaml:13:16: services.dns.prefixes[0]: 203.0.113.0/24 is not a host route",
        ),
        ("203.0.113.53/32,", "203.0.113.53,", "services.dns.prefixes[0]: must be a prefix with a length"),
        ("203.0.113.53/32,", "203.0.113.300/32,", "services.dns.prefixes[0]: is not a valid prefix"),
        (
            "203.0.113.53/32,",
            "192.0.2.10/32,",
            "services.dns.prefixes[0]: 192.0.2.10/32 contains the admin address 192.0.2.10",
        ),
        (
            "        answer: healthy",
            "        answr: healthy",
            "anycastd.yaml:18:9: services.dns.checks[0].answr: unknown key",
        ),
        ("local_asn: 65001", "local_asn: 65001\nrouterid: 1.2.3.4", "anycastd.yaml:3:1: routerid: unknown key"),
        ("router_id: 192.0.2.10", "router_id: 2001:db8::1", "router_id: must be an IPv4 address"),
        ("local_asn: 65001", "local_asn: 0", "local_asn: must be between 1 and 4294967295, got 0"),
        ("local_asn: 65001", "local_asn: '65001'", "local_asn: must be a whole number"),
        (
            "    peer_asn: 65000\n    local_address: 192.0.2.10",
            "    peer_asn: 65000\n    local_address: 2001:db8::9",
            "neighbors[0].local_address: must be of the same family",
        ),
        (
            "    md5_password: s3cret",
            "    hold_time: 1",
            "neighbors[1].hold_time: must be between 3 and 65535 seconds (RFC 4271's minimum is 3), got 1",
        ),
        (
            "    md5_password: s3cret",
            "    hold_time: 0",
            "neighbors[1].hold_time: must be between 3 and 65535 seconds (0 turns the router's dead-peer detection off), got 0",
        ),
        ("    md5_password: s3cret", "    hold_time: 70000", "neighbors[1].hold_time: must be between 3 and 65535"),
        ("    md5_password: s3cret", '    md5_password: "a b"', "neighbors[1].md5_password: must be 1 to 80 printable"),
        ("        qtype: txt", "        qtype: TXTX", "services.dns.checks[0].qtype: is not a DNS record type"),
        ("        qtype: txt", "        rcode: NOPE", "services.dns.checks[0].rcode: is not a DNS response code"),
        (
            "        qtype: txt",
            "        protocol: quic",
            "services.dns.checks[0].protocol: must be one of udp, tcp, dot, doh",
        ),
        ("        qtype: txt", "        rise: 0", "services.dns.checks[0].rise: must be between 1 and 1000, got 0"),
        ("        qtype: txt", "        port: 70000", "services.dns.checks[0].port: must be between 1 and 65535"),
        (
            "        qtype: txt",
            "        probe_service_addresses: yes please",
            "probe_service_addresses: must be true or false",
        ),
        (
            "      - address: 192.0.2.10",
            "      - address: dns1",
            "services.dns.checks[0].address: must be an IPv4 or IPv6 address",
        ),
        (
            "    prefixes:",
            "    interface: this-name-is-too-long\n    prefixes:",
            "services.dns.interface: must be an interface name",
        ),
        ("local_asn: 65001", "local_asn: 65001\nruntime_dir: run", "runtime_dir: must be an absolute path"),
        ("local_asn: 65001", "local_asn: 65001\nexabgp: {watchdog: 0.1}", "exabgp.watchdog: must be > 0.3"),
        (
            "local_asn: 65001",
            "local_asn: 65001\nexabgp: {command: exabgp}",
            "exabgp.command: must be a list of 1 to 64 strings",
        ),
    ],
)
def test_each_mistake_is_reported_where_it_is(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_duplicate_service_names_are_rejected() -> None:
    text = GOOD + "  dns:\n    prefixes: [203.0.113.54/32]\n    checks: [{address: 192.0.2.10}]\n"
    assert problems(text) == [
        "anycastd.yaml:21:3: services.dns: service 'dns' is defined twice (each name may appear once)"
    ]


def test_duplicate_keys_are_rejected() -> None:
    found = problems(GOOD.replace("local_asn: 65001", "local_asn: 65001\nlocal_asn: 65002"))
    assert found == ["anycastd.yaml:3:1: local_asn: duplicate key (each name may appear once)"]


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("local_asn: 65001", "local_asn: -5").replace("timeout: 0.25", "timeout: 0")
    assert len(problems(text)) == 2


def test_missing_keys_point_at_the_enclosing_mapping() -> None:
    found = problems(GOOD.replace("    peer_asn: 65000\n    local_address: 192.0.2.10\n", "", 1))
    assert "anycastd.yaml:4:5: neighbors[0]: missing required key 'peer_asn'" in found
    assert "anycastd.yaml:4:5: neighbors[0]: missing required key 'local_address'" in found


def test_ipv6_prefix_needs_an_ipv6_neighbor() -> None:
    text = GOOD.replace(
        "  - address: 2001:db8:0:1::1\n    peer_asn: 65000\n    local_address: 2001:db8:0:1::2\n    md5_password: s3cret\n",
        "",
    )
    assert problems(text) == [
        "anycastd.yaml:9:33: services.dns.prefixes[1]: 2001:db8::53/128 is IPv6 but no IPv6 neighbor is configured to carry it"
    ]


def test_non_host_prefix_allowed_when_asked() -> None:
    text = GOOD.replace("203.0.113.53/32,", "203.0.113.0/24,").replace(
        "    prefixes:", "    allow_non_host_prefixes: true\n    prefixes:"
    )
    s = parse(text).service("dns")
    assert [str(a) for a in s.host_addresses] == ["2001:db8::53"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "",
            "anycastd.yaml:1:1: the file is empty; start from an example in /usr/share/doc/anycastd-dns/examples/ "
            "(examples/ in the source)",
        ),
        ("router_id: [", "anycastd.yaml:1:13: not valid YAML"),
        ("- a\n- b\n", "anycastd.yaml:1:1: must be a mapping, got a list"),
        ("router_id: 192.0.2.1\nlocal_asn: 1\nneighbors: []\nservices: {}\n", "neighbors: must be a non-empty list"),
        (
            "router_id: 192.0.2.1\nlocal_asn: 1\nneighbors: []\nservices: {}\n",
            "services: must be a mapping of service name",
        ),
        ("1: 2\n", "keys must be strings"),
    ],
)
def test_malformed_documents(text: str, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("  dns: []\n", "services.dns: must be a mapping, got a list"),
        ("  dns: {checks: [{address: 192.0.2.10}]}\n", "services.dns: missing required key 'prefixes'"),
        ("  dns: {prefixes: [], checks: [{address: 192.0.2.10}]}\n", "services.dns.prefixes: must be a non-empty list"),
        ("  dns: {prefixes: [203.0.113.53/32]}\n", "services.dns: missing required key 'checks'"),
        ("  dns: {prefixes: [203.0.113.53/32], checks: []}\n", "services.dns.checks: must be a non-empty list"),
        ("  dns: {prefixes: [203.0.113.53/32, 203.0.113.53/32], checks: [{address: 192.0.2.10}]}\n", "is listed twice"),
        (
            "  dns: {prefixes: [203.0.113.53/32], checks: [{}]}\n",
            "services.dns.checks[0]: missing required key 'address'",
        ),
        ("  dns: {prefixes: [203.0.113.53/32], checks: [7]}\n", "services.dns.checks[0]: must be a mapping"),
        ("  -dns: {prefixes: [203.0.113.53/32], checks: [{address: 192.0.2.10}]}\n", "service names are 1 to 63"),
        ('  "dns\\n": {prefixes: [203.0.113.53/32], checks: [{address: 192.0.2.10}]}\n', "service names are 1 to 63"),
    ],
)
def test_service_shapes(service: str, expected: str) -> None:
    head = GOOD.split("services:", maxsplit=1)[0] + "services:\n"
    assert any(expected in p for p in problems(head + service)), problems(head + service)


def test_duplicate_neighbors() -> None:
    text = GOOD.replace(
        "  - address: 2001:db8:0:1::1",
        "  - address: 192.0.2.9\n    peer_asn: 1\n    local_address: 192.0.2.10\n  - address: 2001:db8:0:1::1",
    )
    assert any("neighbor 192.0.2.9 is listed twice" in p for p in problems(text))


def test_the_shipped_example_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "anycastd.yaml"
    config = load(example)
    assert config.service("dns").checks[0].interval == 0.2


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("drain: {grace: -1}", "anycastd.yaml:21:9: drain.grace: must be >= 0, got -1"),
        ("drain: {quiet: x}", "anycastd.yaml:21:9: drain.quiet: must be a number of seconds, got 'x'"),
        (
            "drain: {quite: 1}",
            "anycastd.yaml:21:9: drain.quite: unknown key (expected one of: fallback, grace, quiet, timeout)",
        ),
        ("metrics: {port: 70000}", "anycastd.yaml:21:11: metrics.port: must be between 1 and 65535, got 70000"),
        (
            "metrics: {address: localhost}",
            "anycastd.yaml:21:11: metrics.address: must be an IPv4 or IPv6 address, got 'localhost'",
        ),
        (
            "control: {group: no-such-group-here}",
            "anycastd.yaml:21:11: control.group: no such group 'no-such-group-here'",
        ),
        (
            "control: {socket: run/control.sock}",
            "anycastd.yaml:21:11: control.socket: must be an absolute path, got 'run/control.sock'",
        ),
        ("state_dir: var/lib", "anycastd.yaml:21:1: state_dir: must be an absolute path, got 'var/lib'"),
    ],
)
def test_operating_settings_are_checked(extra: str, expected: str) -> None:
    assert problems(GOOD + extra + "\n")[0].startswith(expected)


def test_operating_settings_defaults_and_what_a_reload_cannot_change() -> None:
    c = parse(GOOD)
    assert (c.drain.quiet, c.drain.timeout, c.drain.fallback, c.drain.grace) == (1.0, 30.0, 5.0, 3.0)
    assert c.metrics is None and str(c.control_socket) == "/run/anycastd/control.sock"
    assert str(c.state_dir) == "/var/lib/anycastd"
    tuned = parse(GOOD + "metrics: {port: 9100}\ndrain: {grace: 0}\ncontrol: {socket: /tmp/a.sock, group: root}\n")
    assert tuned.metrics is not None and str(tuned.metrics.address) == "127.0.0.1" and tuned.metrics.port == 9100
    assert tuned.drain.grace == 0 and str(tuned.control_socket) == "/tmp/a.sock"
    assert c.restart_only_changes(tuned) == ["control", "metrics"]  # drain applies live
    assert c.restart_only_changes(parse(GOOD.replace("interval: 0.5", "interval: 0.4"))) == []


def service_with(lines: str) -> str:
    """GOOD with ``lines`` (YAML at the service's indent) added to the dns service."""
    return GOOD.replace("    prefixes: [203.0.113.53/32", lines + "    prefixes: [203.0.113.53/32")


def test_failure_action_and_damping_defaults_and_settings() -> None:
    dns = parse(GOOD).service("dns")
    assert dns.failure_action == "withdraw" and not dns.graceful_shutdown
    assert dns.damping == DampingSettings()
    dns = parse(service_with("    failure_action: graceful-shutdown\n    damping: false\n")).service("dns")
    assert dns.graceful_shutdown and dns.damping is None
    assert parse(service_with("    damping: true\n")).service("dns").damping == DampingSettings()
    custom = parse(service_with("    damping: {half_life: 5, suppress: 3000, reuse: 1000, max_suppress: 30}\n"))
    assert custom.service("dns").damping == DampingSettings(1000, 5, 3000, 1000, 30)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("    failure_action: gshut\n", "services.dns.failure_action: must be one of withdraw, graceful-shutdown"),
        ("    damping: {reuse: 2000}\n", "services.dns.damping.reuse: must be below suppress (2000), got 2000"),
        ("    damping: {half_life: 0}\n", "services.dns.damping.half_life: must be > 0"),
        ("    damping: {penalty: -1}\n", "services.dns.damping.penalty"),
        ("    damping: {cutoff: 1}\n", "services.dns.damping.cutoff: unknown key"),
        ("    damping: yes please\n", "services.dns.damping: must be a mapping"),
    ],
)
def test_bad_failure_action_or_damping_says_what_to_fix(lines: str, message: str) -> None:
    assert any(message in p for p in problems(service_with(lines))), problems(service_with(lines))
