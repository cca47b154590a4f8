"""frr/ holds what users copy; the lab runs it. These checks keep the two from drifting apart."""

from __future__ import annotations

import re
from pathlib import Path

from anycastd_lab.clab import BGP_TOPOLOGY, load
from anycastd_lab.topology import ROUTER_ASN, SERVICE_V4, SERVICE_V6, Server, frr_file


def test_the_bgp_config_peers_with_exactly_the_lab_servers() -> None:
    text = frr_file("bgp/frr.conf").read_text()
    assert re.search(rf"^router bgp {ROUTER_ASN}$", text, re.MULTILINE)
    peers = dict(re.findall(r"^ neighbor (\S+) remote-as (\d+)$", text, re.MULTILINE))
    topology = load(BGP_TOPOLOGY)
    servers = [Server.of(topology, node) for node in topology.servers]
    expected = {a: str(s.asn) for s in servers for a in (s.v4, s.v6)}
    assert peers == expected


def test_the_prefix_lists_admit_each_servers_service_addresses_only() -> None:
    text = frr_file("bgp/frr.conf").read_text()
    for n in (1, 2, 3):
        assert f"ip prefix-list FROM-s{n}-V4 seq 10 permit {SERVICE_V4}" in text
        assert f"ipv6 prefix-list FROM-s{n}-V6 seq 10 permit {SERVICE_V6}" in text
    for family in ("DNS4", "DNS6"):
        assert f"  neighbor {family} maximum-prefix 16 restart 1" in text
        assert f"  neighbor {family} route-map TO-DNS out" in text
        assert f" neighbor {family} ttl-security hops 1" in text


def sysctls(path: Path) -> list[str]:
    """``key=value`` for every setting in a sysctl.d file."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            out.append(f"{key.strip()}={value.strip()}")
    return out


def test_router_sysctls() -> None:
    assert sysctls(frr_file("sysctl.d/90-anycastd-router.conf")) == [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.fib_multipath_hash_policy=1",
        "net.ipv6.fib_multipath_hash_policy=1",
        "net.ipv6.conf.all.keep_addr_on_down=1",
        "net.ipv6.conf.default.keep_addr_on_down=1",
    ]
