"""Many addresses on one server, on real daemons: fifty services that share one check are announced together,
withdrawn together when the resolver dies, and a reload that removes some of them leaves the rest in place.

The numbers (1 to 1,000 addresses, time and CPU, before and after) are bench/scale.py's; this proves the
behaviour: one shared probe loop, batched announcements (ExaBGP's multi-NLRI commands) that FRR takes.
"""

from __future__ import annotations

import ipaddress

from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, wait_until

COUNT = 50
#: 25 IPv4 and 25 IPv6 host prefixes
ADDRESSES = [f"203.0.113.{100 + i}/32" for i in range(COUNT // 2)] + [
    f"{ipaddress.ip_address('2001:db8:53::') + i + 1}/128" for i in range(COUNT // 2)
]


def held_via(lab: BgpLab, prefixes: list[str], hops: set[str]) -> int:
    assert lab.fib is not None
    return sum(1 for p in prefixes if lab.fib.nexthops(p) & hops)


def test_fifty_services_of_one_check_rise_fall_and_reload_together(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    hops = {s1.v4, s1.v6}
    lab.accept_many(s1, "203.0.113.0/24", "2001:db8:53::/64", 2 * COUNT)
    config = lab.many_services_config(s1, ADDRESSES)
    lab.kill_anycastd(s1)
    lab.start_anycastd(s1, config)
    wait_until(lambda: held_via(lab, ADDRESSES, hops) == COUNT, 20, what=f"all {COUNT} of s1's prefixes in the FIB")
    lab.wait_status_ok(s1)
    status = lab.anycastctl(s1, "status", "--json").stdout
    assert status.count('"announced": true') >= COUNT, status[:2000]

    with FibWatch(lab.lab.router, SERVICE_V4) as service:
        lab.kill_resolver(s1)
        wait_until(lambda: held_via(lab, ADDRESSES, hops) == 0, 5, what="every one of s1's prefixes gone")
        lab.start_resolver(s1, wait=False)
        wait_until(lambda: held_via(lab, ADDRESSES, hops) == COUNT, 15, what="every one back")
    assert all(len(h) >= 2 for h in service.seen()), service.seen()  # s2 and s3 carried the service throughout

    # a reload that removes half: those are withdrawn; the others never leave the FIB
    kept, removed = ADDRESSES[::2], ADDRESSES[1::2]
    with FibWatch(lab.lab.router, kept[0]) as first:
        lab.reload_anycastd(s1, lab.many_services_config(s1, kept), expect="reloaded")
        wait_until(lambda: held_via(lab, removed, hops) == 0, 10, what="the removed services' prefixes gone")
        assert held_via(lab, kept, hops) == len(kept)
    assert all(first.seen()), first.seen()
