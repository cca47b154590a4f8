"""64-way ECMP on real daemons: `anycastd router` keeps one static path per healthy server for 64 Unbound
servers, the router's kernel hashes distinct flows over all of them, and a killed resolver takes out its own
path and no other.

The times, the CPU and the lab's memory at 64 servers are bench/ecmp.py's; this proves the behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anycastd_lab.topology import SERVICE_V6
from anycastd_lab.wide import WideLab, deviations, spread

SERVERS = 64
FLOWS = 20_000
#: Each server's share of FLOWS, from a uniform hash, is Binomial(FLOWS, 1/64). Five standard deviations
#: (about ±28 % of the mean here) leave a chance of about 4e-5 that one of 64 fair shares falls outside,
#: while a server left out of the hash (0) or given twice its share is far out.
SIGMAS = 5


@pytest.fixture(scope="module")
def wide() -> Iterator[WideLab]:
    with WideLab(SERVERS) as lab:
        yield lab


def test_every_server_is_a_path_and_distinct_flows_reach_each_as_a_uniform_hash_would(wide: WideLab) -> None:
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


def test_a_killed_resolver_takes_out_its_own_path_and_no_other(wide: WideLab) -> None:
    victim = wide.servers[40]
    others = {s.name for s in wide.servers} - {victim.name}
    wide.kill_resolver(victim)
    try:
        wide.wait_server(victim, present=False, timeout=5)
        assert wide.server_paths() == others
    finally:
        wide.start_resolver(victim)
    wide.wait_server(victim, present=True, timeout=10)
    wide.wait_paths(SERVERS, timeout=10)
