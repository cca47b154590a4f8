"""The three kinds of check in configuration: every new key read, defaulted and bounded in exact words; a key of
another kind named as such; and nothing passes that a probe could not run (a CA file, a program)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from anycastd.config import router as router_config
from anycastd.config import sidecar as config
from anycastd.config.checks import COMMAND_PATH, Check, TlsSettings
from tests.helpers import GOOD, problems_of


def with_check(check: dict[str, Any], text: str = GOOD) -> str:
    data = yaml.safe_load(text)
    data["services"]["dns"]["checks"] = [check]
    return yaml.safe_dump(data, sort_keys=False)


def one(check: dict[str, Any]) -> Check:
    return config.parse(with_check(check)).services[0].checks[0]


A = "192.0.2.10"


@pytest.mark.parametrize(("given", "port"), [("udp", 53), ("tcp", 53), ("dot", 853), ("doh", 443)])
def test_each_transport_has_its_port(given: str, port: int) -> None:
    c = one({"address": A, "transport": given})
    assert (c.transport, c.port, c.kind) == (given, port, "dns")
    assert one({"address": A, "transport": given, "port": 8853}).port == 8853


def test_the_defaults_of_an_encrypted_check() -> None:
    c = one({"address": A, "transport": "doh"})
    assert (c.tls, c.path, c.reuse) == (TlsSettings(None, None, True), "/dns-query", 10.0)
    assert (c.interval, c.timeout) == (1.0, 0.8)  # outlasting two of TCP's resends (200 + 400 ms)
    assert (one({"address": A, "protocol": "dot"}).interval, one({"address": A, "transport": "tcp"}).timeout) == (
        1.0,
        0.15,
    )
    c = one({"address": A, "transport": "dot", "reuse": 0, "tls": {"server_name": "dns.example.net", "verify": False}})
    assert (c.reuse, c.tls) == (0.0, TlsSettings("dns.example.net", None, False))


def test_the_ca_file_is_loaded_as_the_probe_will(tmp_path: Path) -> None:
    good = Path("/etc/ssl/certs/ca-certificates.crt")
    assert one({"address": A, "transport": "dot", "tls": {"ca_file": str(good)}}).tls.ca_file == good
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    problems = problems_of(with_check({"address": A, "transport": "dot", "tls": {"ca_file": str(bad)}}), config.parse)
    assert problems == [
        f"services.dns.checks[0].tls.ca_file: cannot be read as PEM certificates ({problems[0].split('(', 1)[1]}"
    ]
    problems = problems_of(
        with_check({"address": A, "transport": "dot", "tls": {"ca_file": "/nonexistent.pem"}}), config.parse
    )
    assert problems == ["services.dns.checks[0].tls.ca_file: no such file '/nonexistent.pem'"]


@pytest.mark.parametrize(
    ("check", "problem"),
    [
        ({"transport": "quic"}, "services.dns.checks[0].transport: must be one of udp, tcp, dot, doh, got 'quic'"),
        ({"transport": "tcp", "protocol": "tcp"},
         "services.dns.checks[0].protocol: is the older name of transport; give transport alone"),
        ({"transport": "udp", "tls": {"verify": False}}, "services.dns.checks[0].tls: applies to transport: dot or doh, not udp"),
        ({"transport": "tcp", "reuse": 1}, "services.dns.checks[0].reuse: applies to transport: dot or doh, not tcp"),
        ({"transport": "dot", "path": "/q"}, "services.dns.checks[0].path: applies to transport: doh (the URL's path), not dot"),
        ({"transport": "doh", "path": "dns-query"},
         "services.dns.checks[0].path: must be a URL path such as /dns-query, without query or spaces, got 'dns-query'"),
        ({"transport": "doh", "path": "/q?x=1"},
         "services.dns.checks[0].path: must be a URL path such as /dns-query, without query or spaces, got '/q?x=1'"),
        ({"transport": "dot", "reuse": -1}, "services.dns.checks[0].reuse: must be >= 0, got -1"),
        ({"transport": "dot", "reuse": 3600.5}, "services.dns.checks[0].reuse: must be at most 3600 seconds, got 3600.5"),
        ({"transport": "dot", "tls": {"verify": "no"}}, "services.dns.checks[0].tls.verify: must be true or false, got 'no'"),
        ({"transport": "dot", "tls": {"server_name": "a b"}},
         "services.dns.checks[0].tls.server_name: must be a host name such as dns.example.net, got 'a b'"),
        ({"transport": "dot", "tls": {"sni": "x"}},
         "services.dns.checks[0].tls.sni: unknown key (expected one of: ca_file, server_name, verify)"),
        ({"transport": "dot", "tls": "yes"}, "services.dns.checks[0].tls: must be a mapping, got a string"),
        ({"transport": "dot", "tls": {"ca_file": "ca.pem"}}, "services.dns.checks[0].tls.ca_file: must be an absolute path, got 'ca.pem'"),
        ({"kind": "probe"}, "services.dns.checks[0].kind: must be one of dns, zone, command, got 'probe'"),
        ({"zones": ["example.com."]}, "services.dns.checks[0].zones: is a key of kind: zone checks, not of kind: dns"),
        ({"kind": "zone", "zones": ["example.com."], "qname": "x."},
         "services.dns.checks[0].qname: is a key of kind: dns checks, not of kind: zone"),
        ({"kind": "command", "command": ["true"], "port": 53},
         "services.dns.checks[0].port: is a key of kind: dns or zone checks, not of kind: command"),
        ({"kind": "zone"}, "services.dns.checks[0]: missing required key 'zones'"),
        ({"kind": "zone", "zones": []}, "services.dns.checks[0].zones: must be a list of 1 to 256 zone names, got a list"),
        ({"kind": "zone", "zones": "example.com."},
         "services.dns.checks[0].zones: must be a list of 1 to 256 zone names, got a string"),
        ({"kind": "zone", "zones": ["a.example.", "a.example"]},
         "services.dns.checks[0].zones: lists a.example. more than once"),
        ({"kind": "zone", "zones": ["a..b"]}, "services.dns.checks[0].zones: is not a valid domain name: A DNS label is empty."),
        ({"kind": "zone", "zones": ["a.example."], "max_lag": 5},
         "services.dns.checks[0].max_lag: applies with a primary to compare serials with; add primary: ADDRESS"),
        ({"kind": "zone", "zones": ["a.example."], "primary": "x"},
         "services.dns.checks[0].primary: must be an IPv4 or IPv6 address, got 'x'"),
        ({"kind": "zone", "zones": ["a.example."], "primary": "198.51.100.1", "max_lag": 2592000.5},
         "services.dns.checks[0].max_lag: must be at most 2.592e+06 seconds, got 2.592e+06"),
        ({"kind": "zone", "zones": ["a.example."], "primary": "198.51.100.1", "primary_port": 0},
         "services.dns.checks[0].primary_port: must be between 1 and 65535, got 0"),
        ({"kind": "command"}, "services.dns.checks[0]: missing required key 'command'"),
        ({"kind": "command", "command": "true"},
         "services.dns.checks[0].command: must be a list of 1 to 64 strings (the program, then its arguments; no shell), got a string"),
        ({"kind": "command", "command": ["no-such-program-here"]},
         f"services.dns.checks[0].command: no executable program 'no-such-program-here' in PATH ({COMMAND_PATH})"),
        ({"kind": "command", "command": ["/nonexistent/check"]},
         "services.dns.checks[0].command: no executable program '/nonexistent/check'"),
        ({"kind": "command", "command": ["bin/check"]},
         "services.dns.checks[0].command: the program must be an absolute path or a name found in PATH, got 'bin/check'"),
        ({"kind": "command", "command": ["true", "a\nb"]},
         "services.dns.checks[0].command: must be printable text without control characters, got 'a\\nb'"),
        ({"kind": "command", "command": ["true"], "output_limit": 1048577},
         "services.dns.checks[0].output_limit: must be between 1 and 1048576, got 1048577"),
        ({"kind": "command", "command": ["true"], "timeout": 1},
         "services.dns.checks[0].timeout: must be smaller than the interval (1 s), got 1"),
    ],
)  # fmt: skip
def test_problems_in_their_exact_words(check: dict[str, Any], problem: str) -> None:
    if check.get("kind") != "command":
        check = {"address": A, **check}
    assert problems_of(with_check(check), config.parse) == [problem]


def test_a_zone_check() -> None:
    c = one({"kind": "zone", "address": A, "zones": ["example.com", "example.net."], "primary": "198.51.100.1",
             "max_lag": 120})  # fmt: skip
    assert (c.kind, c.zones, c.primary, c.primary_port, c.max_lag) == (
        "zone",
        ("example.com.", "example.net."),
        ipaddress.ip_address("198.51.100.1"),
        53,
        120.0,
    )
    assert (c.interval, c.timeout, c.port, c.probe_service_addresses) == (1.0, 0.5, 53, False)
    assert one({"kind": "zone", "address": A, "zones": ["example.com"]}).primary is None


def test_a_command_check_needs_no_address_and_fills_in_the_address() -> None:
    c = one({"kind": "command", "command": ["pgrep", "--exact", "named"]})
    assert (c.kind, c.command, c.output_limit, c.interval, c.timeout) == (
        "command",
        ("pgrep", "--exact", "named"),
        4096,
        1.0,
        0.5,
    )
    c = one({"kind": "command", "address": A, "command": ["true", "{address}", "@{address}", "{addr}"]})
    assert c.argv() == ("true", A, f"@{A}", "{addr}")


def test_the_older_protocol_key_still_reads() -> None:
    assert one({"address": A, "protocol": "tcp"}).transport == "tcp"


ROUTER = """\
services:
  dns:
    prefixes: [203.0.113.53/32]
    checks:
      - {kind: zone, zones: [example.com.], primary: 198.51.100.1}
      - {transport: dot, tls: {verify: false}}
      - {kind: command, command: ["true", "{address}"]}
    servers:
      - {name: ns1, address: 192.0.2.2}
"""


def test_the_router_takes_every_kind_and_fills_in_each_servers_address() -> None:
    service = router_config.parse_router(ROUTER).services[0]
    zone, dot, command = service.checks_for(service.servers[0])
    assert str(zone.address) == str(dot.address) == "192.0.2.2" and zone.kind == "zone"
    assert dot.port == 853
    assert command.argv() == ("true", "192.0.2.2")


# Named by the mutants of `make mutation`: each bound at and just past its edge, each forbidden character alone.
@pytest.mark.parametrize(
    ("check", "problem"),
    [
        ({"transport": "dot", "tls": {"server_name": "a" * 253}}, None),
        ({"transport": "dot", "tls": {"server_name": "a" * 254}},
         f"services.dns.checks[0].tls.server_name: must be a host name such as dns.example.net, got '{'a' * 56}..."),
        ({"transport": "dot", "tls": {"server_name": "a-b_c.d"}}, None),
        ({"transport": "dot", "tls": {"server_name": "2001:db8::53"}}, None),
        ({"transport": "doh", "path": "/" + "p" * 199}, None),
        ({"transport": "doh", "path": "/X/dns-query"}, None),
        ({"transport": "dot", "tls": {"server_name": "bücher.example"}},
         "services.dns.checks[0].tls.server_name: must be a host name such as dns.example.net, got 'bücher.example'"),
        ({"transport": "dot", "tls": {"server_name": "xn--bcher-kva.example"}}, None),
        ({"transport": "doh", "path": "/" + "p" * 200},
         f"services.dns.checks[0].path: must be a URL path such as /dns-query, without query or spaces, got '/{'p' * 55}..."),
        *[({"transport": "doh", "path": f"/a{c}b"},
           f"services.dns.checks[0].path: must be a URL path such as /dns-query, without query or spaces, got {f'/a{c}b'!r}")
          for c in " ?#%\\"],
        ({"transport": "udp", "path": "/q"}, "services.dns.checks[0].path: applies to transport: dot or doh, not udp"),
        ({"transport": "dot", "reuse": 0.5}, None),
        ({"kind": "zone", "zones": [f"z{i}.example." for i in range(256)]}, None),
        ({"kind": "zone", "zones": [f"z{i}.example." for i in range(257)]},
         "services.dns.checks[0].zones: must be a list of 1 to 256 zone names, got a list"),
        ({"kind": "zone", "zones": ["b.example.", "a.example.", "b.example", "a.example"]},
         "services.dns.checks[0].zones: lists a.example., b.example. more than once"),
        ({"kind": "zone", "zones": ["a.example."], "port": 65535}, None),
        ({"kind": "zone", "zones": ["a.example."], "port": 65536},
         "services.dns.checks[0].port: must be between 1 and 65535, got 65536"),
        ({"kind": "zone", "zones": ["a.example."], "port": 0}, "services.dns.checks[0].port: must be between 1 and 65535, got 0"),
        ({"kind": "zone", "zones": ["a.example."], "port": "x"}, "services.dns.checks[0].port: must be a whole number, got 'x'"),
        ({"kind": "zone", "zones": ["a.example."], "primary_port": 5353},
         "services.dns.checks[0].primary_port: applies with a primary to compare serials with; add primary: ADDRESS"),
        ({"kind": "zone", "zones": ["a.example."], "primary": "198.51.100.1", "max_lag": 0.5}, None),
        ({"kind": "command", "command": ["true", *["a"] * 63]}, None),
        ({"kind": "command", "command": ["true", "a" * 4096]}, None),
        ({"kind": "command", "command": ["true", "a" * 4097]},
         "services.dns.checks[0].command: has an argument longer than 4096 characters"),
        ({"kind": "command", "command": ["true"], "address": "x"},
         "services.dns.checks[0].address: must be an IPv4 or IPv6 address, got 'x'"),
    ],
)  # fmt: skip
def test_every_bound_at_its_edge(check: dict[str, Any], problem: str | None) -> None:
    if check.get("kind") != "command":
        check = {"address": A, **check}
    if problem is None:
        one(check)
    else:
        assert problems_of(with_check(check), config.parse) == [problem]


def test_a_zone_checks_port_is_read() -> None:
    assert one({"kind": "zone", "address": A, "zones": ["a.example."], "port": 8053}).port == 8053


def test_tls_verifies_unless_told_not_to() -> None:
    assert one({"address": A, "transport": "dot", "tls": {"server_name": "x.example"}}).tls.verify is True
    assert one({"address": A, "transport": "dot", "tls": {"verify": True}}).tls.verify is True


def test_the_program_is_looked_for_in_the_commands_path_not_the_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "only-in-my-path"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert problems_of(with_check({"kind": "command", "command": [program.name]}), config.parse) == [
        f"services.dns.checks[0].command: no executable program {program.name!r} in PATH ({COMMAND_PATH})"
    ]
    assert one({"kind": "command", "command": [str(program)]}).command == (str(program),)
