"""The dual-homed POP (containerlab/anycast-pop.clab.yml): an edge router, two ToRs, servers on both.

Each test is a row of the fault matrix (docs/reliability.md): what dies, the FIB state each
router must end in, within what bound. The times are measured by bench/pop.py.
"""

from __future__ import annotations

import json
import time

from anycastd_lab import daemons
from anycastd_lab.pop import RETURN_PATH, PopLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, wait_until
from tests.helpers import Row

#: BFD's 300 ms detection plus the router's work, with room for a busy machine; under the 3 s hold time.
DEAD = 1.5
BACK = 30.0


def test_every_server_is_at_both_tors_and_the_edge_spreads_over_both(pop: PopLab) -> None:
    for prefix in (SERVICE_V4, SERVICE_V6):
        assert {tor: pop.tor_server_paths(tor, prefix) for tor in pop.tors} == {
            "r1": {"s1", "s2", "s3"},
            "r2": {"s1", "s2", "s3"},
        }
        assert pop.edge_paths(prefix) == {"r1", "r2"}
    sessions = pop.bfd_sessions()
    # servers x ToRs x families, and the edge's with each ToR and family, as both ends see them
    assert len(sessions) == 3 * 2 * 2 + 2 * 2 * 2 and set(sessions.values()) == {"up"}
    s1 = pop.servers[0]
    status = json.loads(pop.anycastctl(s1, "--json", "status").stdout)
    assert set(status["bgp"].values()) == {"up"} and len(status["bgp"]) == 4
    result = pop.queries(SERVICE_V4.split("/")[0], 300)
    assert result["lost"] == 0 and set(result["answered"]) == {"s1", "s2", "s3"}


def test_a_blackholed_host_leaves_both_tors(pop: PopLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "POP", "host blackholed at both ToRs", "gone at both", DEAD
    s1 = pop.servers[0]
    pop.blackhole(s1)
    row.time("gone from both ToRs", pop.wait_server(s1, present=False, timeout=DEAD))
    for tor in pop.tors:
        assert pop.tor_server_paths(tor, SERVICE_V4) == {"s2", "s3"}
    assert pop.edge_paths() == {"r1", "r2"}
    result = pop.queries(SERVICE_V4.split("/")[0], 300)
    assert result["lost"] == 0 and set(result["answered"]) == {"s2", "s3"}


def test_a_frozen_host_leaves_both_tors(pop: PopLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "POP", "host frozen (every process)", "gone at both", DEAD
    s2 = pop.servers[1]
    pop.freeze_host(s2)
    row.time("gone from both ToRs", pop.wait_server(s2, present=False, timeout=DEAD))
    pop.thaw_host(s2)
    row.time("back", pop.wait_paths(3, timeout=BACK))


def test_one_uplink_cut_leaves_that_tor_and_the_other_keeps_serving(pop: PopLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "POP", "one uplink cut (no carrier change)", "gone at r1", DEAD
    s3 = pop.servers[2]
    started = time.monotonic()
    pop.cut_uplink(s3, "r1")
    wait_until(lambda: "s3" not in pop.tor_server_paths("r1"), DEAD, interval=0.002, what="s3 leaving r1's FIB")
    row.time("gone from r1", time.monotonic() - started)
    assert pop.tor_server_paths("r2") == {"s1", "s2", "s3"} and pop.edge_paths() == {"r1", "r2"}
    # Without return_path, s3's replies are still spread over both links by its own ECMP route, and those on
    # the cut one are lost: test_the_return_path_follows_the_live_sessions shows the difference.
    result = pop.queries(SERVICE_V4.split("/")[0], 300)
    assert "s3" in result["answered"]


def test_a_dead_tor_leaves_the_edge_and_the_servers_keep_the_other(pop: PopLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "POP", "a ToR dies (power)", "edge via the other ToR", DEAD
    started = time.monotonic()
    pop.kill_tor("r1")
    wait_until(lambda: pop.edge_paths() == {"r2"}, DEAD, interval=0.002, what="r1 leaving e1's FIB")
    row.time("gone from e1", time.monotonic() - started)
    wait_until(lambda: pop.edge_paths(SERVICE_V6) == {"r2"}, DEAD, what="r1 leaving e1's IPv6 FIB")
    assert pop.tor_server_paths("r2") == {"s1", "s2", "s3"}
    for s in pop.servers:  # each keeps announcing to the live ToR
        sessions = json.loads(pop.anycastctl(s, "--json", "status").stdout)["bgp"]
        live = {a for a, state in sessions.items() if state == "up"}
        assert live >= set(pop.tor_addresses(s, "r2")), sessions


def test_a_drain_with_two_tors_loses_no_query(pop: PopLab) -> None:
    s2 = pop.servers[1]
    load = pop.client(SERVICE_V4.split("/")[0], count=2000, rate=500)
    time.sleep(1.0)
    drained = pop.anycastctl(s2, "withdraw", "dns", "--reason", "pop drain", "--wait")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert "s2" not in pop.server_paths()
    pop.kill_resolver(s2)  # as an operator stops it once the drain has returned
    result = pop.client_result(load)
    assert result["lost"] == 0, result


def test_the_return_path_follows_the_live_sessions(pop: PopLab) -> None:
    """With `return_path`, a server's route to the clients goes via the ToRs it has a live session with: a dead ToR
    leaves it within BFD's detection and anycastd's reaction, and comes back with the ToR."""
    s1 = pop.servers[0]
    pop.kill_anycastd(s1)
    pop.start_anycastd(s1, daemons.anycastd_config(pop.lab, s1) + RETURN_PATH)
    pop.wait_paths(3, timeout=BACK)
    pop.wait_bfd(s1, timeout=BACK)
    r1_v4, r2_v4 = pop.tor_addresses(s1, "r1")[0], pop.tor_addresses(s1, "r2")[0]
    wait_until(lambda: pop.client_route(s1) == {r1_v4, r2_v4}, 5, what="s1's route via both ToRs")
    started = time.monotonic()
    pop.kill_tor("r1")
    wait_until(lambda: pop.client_route(s1) == {r2_v4}, 3, interval=0.005, what="s1's route via r2 only")
    assert time.monotonic() - started < 3
    status = json.loads(pop.anycastctl(s1, "--json", "status").stdout)["return_path"]
    assert status["routes"]["198.51.100.0/24"] == [r2_v4] and status["problem"] is None
    pop.kill_tor("r1", on=False)
    pop.ensure_frr()
    wait_until(lambda: pop.client_route(s1) == {r1_v4, r2_v4}, BACK, what="s1's route via both ToRs again")


def test_with_the_return_path_a_cut_uplink_loses_no_reply(pop: PopLab) -> None:
    """The same cut as above, every server with `return_path`: once BFD has found the cut, s3 replies by r2 only."""
    for s in pop.servers:
        pop.kill_anycastd(s)
        pop.start_anycastd(s, daemons.anycastd_config(pop.lab, s) + RETURN_PATH)
    pop.wait_paths(3, timeout=BACK)
    pop.wait_bfd(timeout=BACK)
    s3 = pop.servers[2]
    r2_v4 = pop.tor_addresses(s3, "r2")[0]
    pop.cut_uplink(s3, "r1")
    wait_until(lambda: pop.client_route(s3) == {r2_v4}, 3, interval=0.005, what="s3's route via r2 only")
    wait_until(lambda: "s3" not in pop.tor_server_paths("r1"), DEAD, what="s3 leaving r1")
    result = pop.queries(SERVICE_V4.split("/")[0], 300)
    assert result["lost"] == 0 and "s3" in result["answered"], result


def test_a_flapping_bfd_session_is_held_back_and_the_other_tor_keeps_the_server(pop: PopLab, row: Row) -> None:
    """A lossy uplink makes BFD flap; each flap would be two route changes at r1. Flap damping of the session holds
    it back after a few: s1 leaves r1 and stays out, r2 keeps it, and status says so (bench/flaps.py counts)."""
    row.variant, row.fault, row.expected, row.bound = "POP", "uplink to r1 losing 50 % each way", "held back", 30.0
    s1 = pop.servers[0]
    started = time.monotonic()
    pop.cut_uplink(s1, "r1", percent=50)

    def held() -> bool:
        sessions = json.loads(pop.anycastctl(s1, "--json", "status").stdout)["bfd"]["sessions"]
        return bool(sessions[pop.tor_addresses(s1, "r1")[0]]["damping"]["held"])

    wait_until(held, 30.0, interval=0.2, what="s1's session with r1 held back by flap damping")
    row.time("held back", time.monotonic() - started)
    wait_until(lambda: "s1" not in pop.tor_server_paths("r1"), 5.0, what="s1 out of r1")
    time.sleep(3.0)  # r1's BFD and BGP may come back up meanwhile: s1's path must not
    assert "s1" not in pop.tor_server_paths("r1") and "s1" in pop.tor_server_paths("r2")
    assert "HELD BACK by flap damping" in pop.anycastctl(s1, "status").stdout
    pop.kill_anycastd(s1)  # the penalty lives in anycastd: the next test's restore starts it afresh
