"""Wide ECMP, the sidecar variant, on real daemons: 20 servers each running Unbound and anycastd with its
ExaBGP, FRR's bgpd keeping one path per server under the policy `anycastd frr-policy` generated for all 20,
more than frr/bgp/frr.conf's 16 paths (anycastd_lab.wide raises it to the servers' count). Distinct flows
reach every server as a uniform hash would, and a killed resolver takes out its own path and no other.

The times, the CPU and the memory at 64 servers are bench/ecmp_sidecar.py's; this proves the behaviour at a
size CI runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anycastd_lab.topology import SERVICE_V6
from anycastd_lab.wide import WideBgpLab, deviations, spread

SERVERS = 20
FLOWS = 20_000
#: Each server's share of FLOWS is Binomial(FLOWS, 1/20) under a uniform hash: five standard deviations
#: (about ±15 % of the mean here) leave a chance of about 1e-5 that a fair share falls outside, while a
#: server left out of the hash, or given twice its share, is far out.
SIGMAS = 5


@pytest.fixture(scope="module")
def wide() -> Iterator[WideBgpLab]:
    with WideBgpLab(SERVERS) as lab:
        yield lab


def test_every_server_is_a_path_and_distinct_flows_reach_each_as_a_uniform_hash_would(wide: WideBgpLab) -> None:
    names = {s.name for s in wide.servers}
    assert len(names) == SERVERS
    assert wide.server_paths() == names
    assert len(wide.paths(SERVICE_V6)) == SERVERS
    counts = spread(wide, FLOWS)
    assert set(counts) == names
    total = sum(counts.values())
    assert total >= FLOWS * 0.95, f"the router forwarded {total} of {FLOWS} flows"
    outside = {name: d for name, d in deviations(counts).items() if abs(d) > SIGMAS}
    assert not outside, f"sigmas from an equal share of {total}: {outside} ({counts})"


def test_a_killed_resolver_takes_out_its_own_path_and_no_other(wide: WideBgpLab) -> None:
    victim = wide.servers[17]
    others = {s.name for s in wide.servers} - {victim.name}
    wide.kill_resolver(victim)
    try:
        wide.wait_server(victim, present=False, timeout=5)
        assert wide.server_paths() == others
        assert len(wide.paths(SERVICE_V6)) == SERVERS - 1
    finally:
        wide.start_resolver(victim)
    wide.wait_server(victim, present=True, timeout=10)
    wide.wait_paths(SERVERS, timeout=10)
