"""frr/bgp/frr.conf as users copy it, on the lab router: parsed whole, filtering, and MD5."""

from __future__ import annotations

import json
import time

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import SERVICE_V4, wait_until


def test_the_router_took_every_line_of_frr_conf(lab: BgpLab) -> None:
    running = lab.vtysh("show running-config")
    for line in (
        "ip prefix-list FROM-s1-V4 seq 10 permit 203.0.113.53/32",
        "ipv6 prefix-list FROM-s3-V6 seq 10 permit 2001:db8::53/128",
        " match peer 192.0.2.18",
        "  neighbor DNS4 route-map FROM-DNS-V4 in",
        "  neighbor DNS6 route-map FROM-DNS-V6 in",
        "  neighbor DNS4 maximum-prefix 16 restart 1",
        " neighbor DNS4 ttl-security hops 1",
        " neighbor DNS6 ttl-security hops 1",
        " neighbor DNS4 timers 1 3",
        " bgp bestpath as-path multipath-relax",
    ):
        assert line in running.splitlines(), line
    log = (lab.lab.workdir / "router" / "bgpd.log").read_text()
    assert "Unknown command" not in log and "% " not in log, log


def test_a_server_announcing_what_it_does_not_own_is_ignored(lab: BgpLab) -> None:
    """s1 starts announcing an address in no service of its own (in the documentation range, a host route,
    so a range-wide filter would have let it through), a client's address and a wider prefix: the router's
    FIB takes none of them, and s1's own service address stays."""
    s1 = lab.servers[0]
    rogue = daemons.extra_service(
        s1, "rogue", ["203.0.113.99/32", "198.51.100.99/32", "203.0.113.128/25"], allow_non_host=True
    )
    config = daemons.anycastd_config(lab.lab, s1) + rogue
    lab.reload_anycastd(s1, config, expect="reloaded")

    def sent() -> bool:
        status = json.loads(lab.anycastctl(s1, "status", "rogue", "--json").stdout)
        return all(p["announced"] for p in status["services"][0]["prefixes"])

    wait_until(sent, 10, what="ExaBGP on s1 acknowledging the rogue prefixes")
    time.sleep(1.0)  # well past the router's processing of an update
    assert lab.paths("203.0.113.99/32") == frozenset()  # no service of s1's (per-server prefix lists)
    assert lab.paths("198.51.100.99/32") == frozenset()  # would have hijacked a client address
    assert lab.paths("203.0.113.128/25") == frozenset()  # in range, but not a host route
    assert len(lab.paths(SERVICE_V4)) == 3
    neighbor = json.loads(lab.vtysh(f"show bgp neighbor {s1.v4} json"))[s1.v4]
    ipv4 = neighbor["addressFamilyInfo"]["ipv4Unicast"]
    assert ipv4["acceptedPrefixCounter"] == 1, ipv4  # 203.0.113.53/32 only


def test_md5_on_both_sides_establishes_and_a_mismatch_does_not(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    base = daemons.anycastd_config(lab.lab, s1)
    neighbor_line = f"  - address: {s1.router_v4}\n"
    with_md5 = base.replace(neighbor_line, neighbor_line + "    md5_password: s3cret-lab\n", 1)
    assert with_md5 != base
    lab.vtysh_config(f"router bgp 65000\n neighbor {s1.v4} password s3cret-lab")
    try:
        lab.kill_anycastd(s1)
        lab.start_anycastd(s1, with_md5)
        wait_until(lambda: lab.bgp_established(s1), 20, what="the MD5-protected session")
        lab.wait_server(s1, present=True, timeout=10)
        lab.kill_anycastd(s1)
        lab.start_anycastd(s1, with_md5.replace("s3cret-lab", "wrong-secret"))
        lab.anycastctl_ready(s1)
        time.sleep(4.0)  # several connect retries (timers connect 1)
        assert not lab.bgp_established(s1)
        assert "s1" not in lab.server_paths()
    finally:
        lab.vtysh_config(f"router bgp 65000\n no neighbor {s1.v4} password")
