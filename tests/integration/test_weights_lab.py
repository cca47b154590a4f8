"""Weighted ECMP on real daemons: each sidecar announces its service with a `weight` (the link-bandwidth
extended community), FRR 8.4 turns the three into nexthop weights with its defaults, and the router's kernel
splits distinct flows by them. Reloads change the weights without a flap.
"""

from __future__ import annotations

from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, wait_until

WEIGHTS = (1, 2, 3)
QUERIES = 30_000
ADDRESS = SERVICE_V4.split("/")[0]
TOLERANCE = 0.15  # the bound: each server's share within ±15 % of its weight's share


def expected_shares(lab: BgpLab, weights: tuple[int, ...]) -> dict[str, float]:
    return {s.name: w / sum(weights) for s, w in zip(lab.servers, weights, strict=True)}


def close(shares: dict[str, float], expected: dict[str, float], tolerance: float) -> bool:
    return shares.keys() == expected.keys() and all(abs(shares[n] / expected[n] - 1) <= tolerance for n in expected)


def test_weights_one_two_three_split_the_kernel_nexthops_and_the_queries(lab: BgpLab) -> None:
    expected = expected_shares(lab, WEIGHTS)
    before = lab.queries(ADDRESS, 3000)["answered"]
    assert all(abs(before.get(s.name, 0) / 3000 - 1 / 3) < 0.1 for s in lab.servers), before  # today: a third each
    try:
        with FibWatch(lab.lab.router, SERVICE_V4) as v4, FibWatch(lab.lab.router, SERVICE_V6) as v6:
            lab.weigh(WEIGHTS)
            # FRR rounds each path's share of the bandwidth to a whole percent: 16, 33, 50
            wait_until(
                lambda: all(close(lab.kernel_shares(p), expected, 0.05) for p in (SERVICE_V4, SERVICE_V6)),
                15,
                what="the kernel's nexthop weights at 1:2:3 in both families",
            )
        # a weight change is an announcement with other attributes: the set of paths never changed
        assert all(len(hops) == 3 for hops in v4.seen() + v6.seen()), (v4.seen(), v6.seen())
        result = lab.queries(ADDRESS, QUERIES)
        assert result["lost"] == 0, result
        shares = {name: count / QUERIES for name, count in result["answered"].items()}
        assert close(shares, expected, TOLERANCE), (shares, expected)
        status = lab.anycastctl(lab.servers[2], "status").stdout
        assert "weight: 3 (configured; link bandwidth 3 Mbit/s)" in status, status
        assert 'anycastd_weight{service="dns"} 3.0' in lab.metrics(lab.servers[2])
        # mixed presence: with its defaults FRR falls back to equal weights while any path lacks the community
        s1 = lab.servers[0]
        lab.reload_anycastd(s1, lab.weighted_config(s1, None), expect="reloaded")
        wait_until(lambda: equal(lab), 15, what="equal nexthop weights once s1 carries no weight")
    finally:
        lab.weigh([None] * len(lab.servers))
    wait_until(lambda: equal(lab), 15, what="equal nexthop weights again once the weights are removed")


def equal(lab: BgpLab) -> bool:
    even = {s.name: 1 / 3 for s in lab.servers}
    return all(close(lab.kernel_shares(p), even, 0.01) for p in (SERVICE_V4, SERVICE_V6))
