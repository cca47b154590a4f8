"""`anycastd router` against real FRR (zebra + staticd) and real BIND and Unbound: what the router's kernel holds.

Every assertion is on the router's FIB (read over netlink) or on what
staticd holds, never on anycastd's own idea of it.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

from anycastd_lab import daemons
from anycastd_lab.fib import FibWatch
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Server, wait_until

TAG = 5353


def test_one_nexthop_per_healthy_server_in_both_families(router_lab: StaticLab) -> None:
    lab = router_lab
    assert lab.paths(SERVICE_V4) == {s.v4 for s in lab.servers}
    assert lab.paths(SERVICE_V6) == {s.v6 for s in lab.servers}
    assert {(str(i.route.nexthop), i.tag) for i in lab.static_routes()} == {
        *((s.v4, TAG) for s in lab.servers),
        *((s.v6, TAG) for s in lab.servers),
    }
    answered = lab.queries("203.0.113.53", 300)
    assert answered["lost"] == 0 and set(answered["answered"]) == {"s1", "s2", "s3"}, answered


def test_a_killed_resolver_leaves_and_comes_back(router_lab: StaticLab) -> None:
    lab = router_lab
    s2 = lab.servers[1]
    lab.kill_resolver(s2)
    lab.wait_server(s2, present=False, timeout=3)
    # IPv6 is the same change, installed by zebra just after: a dump may catch the kernel replacing it
    want = {s.v6 for s in lab.servers if s != s2}
    wait_until(lambda: lab.paths(SERVICE_V6) == want, 1.0, what=f"IPv6 via {sorted(want)}")
    lab.start_resolver(s2, wait=False)
    lab.wait_server(s2, present=True, timeout=5)
    lab.wait_paths(3)


def test_a_frozen_resolver_leaves_and_comes_back(router_lab: StaticLab) -> None:
    lab = router_lab
    s1 = lab.servers[0]
    lab.signal_resolver(s1, signal.SIGSTOP)
    lab.wait_server(s1, present=False, timeout=5)
    lab.signal_resolver(s1, signal.SIGCONT)
    lab.wait_server(s1, present=True, timeout=5)


def test_draining_a_server_removes_it_until_announced(router_lab: StaticLab) -> None:
    lab = router_lab
    s3 = lab.servers[2]
    drain = lab.anycastctl("withdraw", "--server", "s3", "--reason", "kernel upgrade", "--wait", "--json")
    assert drain.returncode == 0, drain.stderr
    reply = json.loads(drain.stdout)
    assert reply["withdrawn"] == ["s3"] and reply["drain"]["drained"] is True
    assert "s3" not in lab.server_paths()  # gone from the kernel by the time --wait returned
    assert lab.queries("203.0.113.53", 200)["answered"].get("s3", 0) == 0
    time.sleep(1.0)  # s3 is healthy: several rise periods, and still no route
    assert "s3" not in lab.server_paths()
    status = json.loads(lab.anycastctl("status", "--json").stdout)
    s3_status = status["services"][0]["servers"][2]
    assert s3_status["maintenance"]["reason"] == "kernel upgrade" and s3_status["healthy"] is False
    refused = lab.anycastctl("withdraw", "dns", "--reason", "x")
    assert refused.returncode == 1 and "name one with --server" in refused.stderr
    assert lab.anycastctl("announce", "--server", "s3").returncode == 0
    lab.wait_server(s3, present=True, timeout=5)


def test_a_drain_survives_a_restart_of_anycastd_router(router_lab: StaticLab) -> None:
    lab = router_lab
    s1 = lab.servers[0]
    assert lab.anycastctl("withdraw", "--server", "s1", "--reason", "disk swap").returncode == 0
    lab.wait_server(s1, present=False, timeout=5)
    lab.stop_anycastd(signal.SIGKILL)
    lab.start_anycastd()
    lab.anycastctl_ready()
    # FRR keeps its routes across the restart, so what it holds proves nothing until the new
    # anycastd has decided (every server has a verdict) and a whole pass over FRR has begun after
    # that (the lab resyncs every second): a lost drain would have put s1's routes back by then.
    status: dict[str, Any] = {}

    def read() -> dict[str, Any]:
        status.clear()
        status.update(json.loads(lab.anycastctl("status", "--json").stdout))
        return status

    wait_until(lambda: read()["services"][0]["decided"], 10, what="anycastd router deciding after its restart")
    decided_at = status["frr"]["last_sync"]
    wait_until(
        lambda: read()["frr"]["last_sync"] not in (None, decided_at) and status["frr"]["in_sync"],
        10,
        what="a pass over FRR after the decision",
    )
    servers = {s["name"]: s for s in status["services"][0]["servers"]}
    assert servers["s1"]["state"] == "maintenance" and servers["s1"]["maintenance"]["reason"] == "disk swap"
    assert servers["s1"]["checks"][0]["state"] == "up"  # its probes pass; the drain overrides them
    assert not servers["s1"]["routed"] and status["services"][0]["routed_via"] == ["s2", "s3"]
    assert lab.server_paths() == {"s2", "s3"}


def s3_fails_alone(lab: StaticLab) -> tuple[Server, Server, Server]:
    """s3's resolver dies and its path leaves; then more than the cascade window (0.75 s with the lab's
    checks) goes by, so that whatever fails next is an event of its own."""
    s1, s2, s3 = lab.servers
    lab.kill_resolver(s3)
    lab.wait_server(s3, present=False, timeout=3)
    time.sleep(1.5)
    return s1, s2, s3


def test_when_every_resolver_dies_the_last_set_stays_and_the_alarm_is_raised(router_lab: StaticLab) -> None:
    lab = router_lab
    offset = lab.log_size()
    s1, s2, s3 = s3_fails_alone(lab)
    lab.kill_resolvers(s1, s2)  # at the same instant: each is seen at its next probe, within the window
    wait_until(lambda: "DEGRADED" in lab.log_since(offset), 5, what="the DEGRADED log line")
    time.sleep(0.5)
    # Not a black hole: the routes from before s1 and s2 failed stay. Their deaths are seen within the
    # cascade window of each other: one event, so both are kept, not only the last one seen.
    assert lab.server_paths() == {"s1", "s2"}, lab.log_since(offset)
    status = lab.anycastctl("status")
    assert "DEGRADED: no server passes its probes; keeping the routes from before the failures began (s1, s2)" in (
        status.stdout
    )
    assert 'anycastd_service_degraded{service="dns"} 1.0' in lab.metrics()
    lab.start_resolver(s3, wait=False)
    wait_until(lambda: lab.server_paths() == {"s3"}, 5, what="s3 alone replacing the kept set")


def test_a_cascade_stays_one_while_frr_is_too_slow_to_take_it(router_lab: StaticLab) -> None:
    """The cascade's clock is the verdicts', not FRR's: staticd frozen while s1 and s2 die holds the first
    change up for a second, and the second verdict, seen meanwhile, still joins the first one's cascade."""
    lab = router_lab
    offset = lab.log_size()
    s1, s2, _ = s3_fails_alone(lab)
    lab.stop_frr("staticd", signal.SIGSTOP)
    try:
        lab.kill_resolvers(s1, s2)
        wait_until(
            lambda: lab.log_since(offset).count("up -> down (checks[0]") >= 3,
            3,
            what="s1's and s2's verdicts",
            explain=lambda: lab.log_since(offset),
        )
        time.sleep(1.0)  # the first verdict's change waits on staticd for all this time
    finally:
        lab.stop_frr("staticd", signal.SIGCONT)
    wait_until(lambda: "DEGRADED" in lab.log_since(offset), 5, what="the DEGRADED log line")
    time.sleep(1.5)  # the held change, then a resync (1 s in the lab): FRR as anycastd leaves it
    assert lab.server_paths() == {"s1", "s2"}, lab.log_since(offset)


def test_a_route_added_by_hand_is_left_alone(router_lab: StaticLab) -> None:
    lab = router_lab
    s1, s2 = lab.servers[0], lab.servers[1]
    lab.vtysh_config(f"ip route 198.51.100.128/25 {s1.v4}\nip route 203.0.113.54/32 {s2.v4} tag 77")
    try:
        lab.kill_resolver(s1)
        lab.wait_server(s1, present=False, timeout=3)
        lab.start_resolver(s1, wait=False)
        lab.wait_server(s1, present=True, timeout=5)
        time.sleep(1.5)  # a resync period
        assert lab.paths("198.51.100.128/25") == {s1.v4}
        assert lab.paths("203.0.113.54/32") == {s2.v4}
    finally:
        lab.vtysh_config(f"no ip route 198.51.100.128/25 {s1.v4}\nno ip route 203.0.113.54/32 {s2.v4} tag 77")


def test_restarting_anycastd_router_changes_nothing(router_lab: StaticLab) -> None:
    lab = router_lab
    offset = lab.log_size()
    with FibWatch(lab.lab.router, SERVICE_V4) as v4, FibWatch(lab.lab.router, SERVICE_V6) as v6:
        lab.stop_anycastd(signal.SIGTERM)
        assert lab.paths() == {s.v4 for s in lab.servers}  # stopping leaves the routes
        lab.start_anycastd()
        lab.anycastctl_ready()
        wait_until(lambda: "no route" not in lab.anycastctl("status").stdout, 5)
        time.sleep(2.0)  # every verdict in, and a resync
    assert v4.seen() == [frozenset(s.v4 for s in lab.servers)]
    assert v6.seen() == [frozenset(s.v6 for s in lab.servers)]
    assert "FRR: " not in lab.log_since(offset)  # not one change was sent


def test_frr_losing_its_routes_is_repaired_by_the_next_sync(router_lab: StaticLab) -> None:
    lab = router_lab
    offset = lab.log_size()
    lab.stop_frr("staticd")  # zebra removes staticd's routes with it
    wait_until(lambda: not lab.paths(), 5, what="the routes leaving with staticd")
    wait_until(lambda: "staticd is not running" in lab.log_since(offset), 5, what="anycastd reporting FRR's words")
    status = json.loads(lab.anycastctl("status", "--json").stdout)
    assert status["frr"]["in_sync"] is False
    lab.start_frr("staticd")  # comes back empty: frr/static/frr.conf holds no service route
    lab.wait_paths(3, timeout=5)  # repaired by the periodic resync (1 s in the lab), nobody told it
    wait_until(lambda: "FRR is in step again" in lab.log_since(offset), 5, what="anycastd seeing FRR in step")


def test_a_restart_with_a_typo_in_the_config_keeps_the_routes(router_lab: StaticLab) -> None:
    lab = router_lab
    path, _, _ = daemons.router_paths(lab.lab)
    lab.stop_anycastd(signal.SIGTERM)
    path.write_text(daemons.router_config(lab.lab).replace("when_all_down: keep", "when_all_down: kept"))
    argv = [sys.executable, "-m", "anycastd", "router", "--config", str(path)]
    proc = lab.lab.spawn("bad-router", lab.lab.router, argv, path.with_suffix(".bad.log"))
    assert proc.wait(timeout=20) == 1
    assert "router.when_all_down: must be one of keep, withdraw, got 'kept'" in path.with_suffix(".bad.log").read_text()
    assert lab.paths() == {s.v4 for s in lab.servers}
