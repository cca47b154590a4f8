"""The fault matrix, router-side variant (`anycastd router`, FRR's staticd): one fault at a time.

Without BGP there is no session to close, so when anycastd router itself dies
or freezes the routes stay as it last set them (fail-static, docs/reliability.md):
the tests prove they stay, and that a restarted anycastd router reconciles
against what is healthy *now*. Faults of FRR and of the link end, as in the
sidecar's matrix, with the right kernel FIB and zebra agreeing with it.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from anycastd_lab.static import StaticLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, wait_until
from tests.helpers import Row

DEATH = 1.0
RECONCILE = 5.0  # a started anycastd router: every server's verdict in (rise 3 at 0.2 s), then one sync
ROUTER_BACK = 15.0


def test_anycastd_router_killed_keeps_the_routes_and_a_restart_reconciles(router_lab: StaticLab, row: Row) -> None:
    lab = router_lab
    row.variant, row.fault = "router", "anycastd router SIGKILL; a resolver dies meanwhile; restarted"
    row.expected, row.bound = "routes kept as last set (fail-static); after the restart, only healthy ones", RECONCILE
    s2 = lab.servers[1]
    lab.stop_anycastd(signal.SIGKILL)
    lab.kill_resolver(s2)
    time.sleep(1.0)
    assert lab.server_paths() == {"s1", "s2", "s3"}  # fail-static: nothing changes without anycastd
    started = time.monotonic()
    lab.start_anycastd()  # what systemd's Restart= does
    lab.wait_server(s2, present=False, timeout=RECONCILE)
    row.time("dead server gone after the restart", time.monotonic() - started)
    # IPv6 is the same change, installed by zebra a moment later: a dump may catch it halfway
    wait_until(lambda: lab.server_paths(SERVICE_V6) == {"s1", "s3"}, 2.0, what="s1 and s3 alone for IPv6")
    lab.wait_zebra_agrees()


def test_anycastd_router_stopped_keeps_the_routes_and_acts_again_when_thawed(router_lab: StaticLab, row: Row) -> None:
    lab = router_lab
    row.variant, row.fault = "router", "anycastd router SIGSTOP, then SIGCONT"
    row.expected, row.bound = "routes kept while stopped; a resolver death after the thaw removes its path", DEATH
    s1 = lab.servers[0]
    proc = lab.lab.processes["anycastd-router"]
    proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)
        assert lab.server_paths() == {"s1", "s2", "s3"}
    finally:
        proc.send_signal(signal.SIGCONT)
    lab.kill_resolver(s1)
    row.time("then resolver SIGKILL -> gone", lab.wait_server(s1, present=False, timeout=DEATH))
    lab.wait_zebra_agrees()


def test_link_down_and_up(router_lab: StaticLab, row: Row) -> None:
    lab = router_lab
    row.variant, row.fault = "router", "router-server link down and up (3x)"
    row.expected, row.bound = "path gone while down, back in both families after; zebra agrees", ROUTER_BACK
    s3 = lab.servers[2]
    for _ in range(3):
        gone, back = lab.flap_link(s3, gone_within=DEATH, back_within=ROUTER_BACK)
        row.time("gone", gone)
        row.time("back", back)
        # Three failures within two seconds are what flap damping suppresses (test_fleet_lab.py proves it);
        # here each flap is a fault of its own, so the operator's announce clears the penalty between them.
        assert lab.anycastctl("announce", "--server", s3.name).returncode == 0


@pytest.mark.parametrize("zebra_crash", [False, True], ids=["reboot", "zebra-crash"])
def test_frr_restarted(router_lab: StaticLab, row: Row, zebra_crash: bool) -> None:
    lab = router_lab
    row.variant = "router"
    if zebra_crash:
        row.fault, row.expected = (
            "zebra SIGKILL, then FRR restarted",
            "paths kept in the kernel meanwhile; every route back, zebra agrees",
        )
    else:
        row.fault = "zebra and staticd stopped and started (a router reboot)"
        row.expected = "every route written again by the next resync; zebra agrees"
    row.bound = RECONCILE
    lab.stop_all_frr(zebra_crash)
    held = (len(lab.paths(SERVICE_V4)), len(lab.paths(SERVICE_V6)))
    assert held == ((3, 3) if zebra_crash else (0, 0))
    started = time.monotonic()
    lab.start_frr(*lab.FRR_DAEMONS)  # frr/static/frr.conf holds no service route: anycastd writes them
    lab.wait_paths(3, timeout=RECONCILE)
    lab.wait_staticd(RECONCILE)  # a new zebra adopts the kernel's routes; staticd's come from anycastd
    row.time("back", time.monotonic() - started)
    lab.wait_zebra_agrees()


def test_a_kernel_fib_that_disagrees_with_zebra_is_reported_and_repaired(router_lab: StaticLab, row: Row) -> None:
    lab = router_lab
    row.variant, row.fault = "router", "the kernel loses a nexthop behind zebra's back"
    row.expected, row.bound = "divergence logged and repaired by the next resync; zebra agrees", RECONCILE
    s1, s2, s3 = lab.servers
    offset = lab.log_size()
    replace = ["ip", "route", "replace", SERVICE_V4, "proto", "zebra", "metric", "20"]
    lab.lab.exec(lab.lab.router, *replace, "nexthop", "via", s2.v4, "nexthop", "via", s3.v4)
    assert lab.paths() == {s2.v4, s3.v4} and lab.zebra_paths() == {s1.v4, s2.v4, s3.v4}  # the divergence
    started = time.monotonic()
    lab.wait_paths(3, timeout=RECONCILE, both_families=False)
    row.time("repaired", time.monotonic() - started)
    lab.wait_zebra_agrees()
    said = lab.log_since(offset)
    assert f"the kernel's FIB disagrees with zebra: {SERVICE_V4}: the kernel lacks {s1.v4}" in said, said
    wait_until(lambda: json.loads(lab.anycastctl("status", "--json").stdout)["frr"]["kernel_agrees"] is True, 5)
    assert "anycastd_kernel_fib_agrees 1.0" in lab.metrics()


# a whole host dies: the probes see it as they see a frozen resolver ----------------------------------------------

#: A probe that meets silence decides in one timeout plus fall - 1 confirming ones (docs/architecture.md), then a sync.
DEAD_HOST = 2.0


def test_a_blackholed_host_fails_its_probes(router_lab: StaticLab, row: Row) -> None:
    lab = router_lab
    row.variant, row.fault, row.expected, row.bound = "router", "host blackholed", "path gone", DEAD_HOST
    s3 = lab.servers[2]
    lab.blackhole(s3)
    row.time("gone", lab.wait_server(s3, present=False, timeout=DEAD_HOST))
    wait_until(lambda: lab.server_paths(SERVICE_V6) == {"s1", "s2"}, 2.0, what="s1 and s2 alone for IPv6")
    lab.wait_zebra_agrees()
    lab.blackhole(s3, on=False)
    row.time("back", lab.wait_server(s3, present=True, timeout=ROUTER_BACK))


def test_a_frozen_host_fails_its_probes(router_lab: StaticLab, row: Row) -> None:
    lab = router_lab
    row.variant, row.fault, row.expected, row.bound = "router", "host frozen (every process)", "path gone", DEAD_HOST
    s1 = lab.servers[0]
    lab.freeze_host(s1)
    row.time("gone", lab.wait_server(s1, present=False, timeout=DEAD_HOST))
    lab.thaw_host(s1)
    row.time("back", lab.wait_server(s1, present=True, timeout=ROUTER_BACK))
