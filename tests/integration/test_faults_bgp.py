"""The fault matrix, sidecar variant: break one thing at a time, assert on the router's kernel FIB.

Each test is one row of docs/reliability.md: a fault, the FIB state it must end
in, and the bound within which it must get there (the wait's timeout). After
the fault, zebra must agree with the kernel; after a fault in anycastd's own
process tree, killing the resolver must still remove the path within 1 s:
whatever was broken, something is in control again.
"""

from __future__ import annotations

import signal
import time

import pytest

from anycastd.lab import daemons
from anycastd.lab.bgp import BgpLab
from anycastd.lab.fib import FibWatch
from anycastd.lab.topology import SERVICE_V4, SERVICE_V6, Server, wait_until
from tests.integration.conftest import Row

DEATH = 1.0  # a process of the tree dies: the path is gone within this (issue 14)
FREEZE = 3.0  # a process of the tree freezes
BACK = 30.0  # a generous bound for a healed tree to announce again
ROUTER_BACK = 15.0  # FRR restarted: sessions up again and every path back


def still_in_control(lab: BgpLab, server: Server, row: Row) -> None:
    """The tree is back: the path returns, and a resolver death after the fault is still acted on."""
    row.time("announced again", lab.wait_server(server, present=True, timeout=BACK))
    lab.kill_resolver(server)
    row.time("then resolver SIGKILL -> gone", lab.wait_server(server, present=False, timeout=DEATH))
    lab.wait_zebra_agrees()


# the resolver -------------------------------------------------------------------------------------------


def test_resolver_killed(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "resolver SIGKILL", "path gone", DEATH
    s1 = lab.servers[0]
    lab.kill_resolver(s1)
    row.time("gone", lab.wait_server(s1, present=False, timeout=DEATH))
    assert lab.server_paths(SERVICE_V6) == {"s2", "s3"}
    lab.wait_zebra_agrees()


def test_resolver_stopped(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "resolver SIGSTOP", "path gone", FREEZE
    s2 = lab.servers[1]
    lab.signal_resolver(s2, signal.SIGSTOP)
    row.time("gone", lab.wait_server(s2, present=False, timeout=FREEZE))
    lab.wait_zebra_agrees()


def test_resolver_answering_servfail(lab: BgpLab, row: Row, tmp_path_factory: pytest.TempPathFactory) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "resolver answers SERVFAIL", "path gone", FREEZE
    s1 = lab.servers[0]
    assert s1.resolver == "bind"
    broken = tmp_path_factory.mktemp("zone") / "db.example"
    broken.write_text("$TTL 60\n@ IN SOA ns. hostmaster. 1 1 1 1 1\nthis is not a record\n")
    broken.parent.chmod(0o755)
    broken.chmod(0o644)
    try:
        started = time.monotonic()
        lab.restart_resolver(s1, daemons.named_config(lab.lab, s1, zone=broken))
        row.time("gone", lab.wait_server(s1, present=False, timeout=FREEZE) + time.monotonic() - started)
        answer = lab.lab.exec(lab.lab.ns(s1.name), "dig", f"@{s1.v4}", "health.example.", "TXT", "+time=1", "+tries=1")
        assert "status: SERVFAIL" in answer.stdout, answer.stdout
        lab.wait_zebra_agrees()
    finally:
        lab.restart_resolver(s1, wait=True)


def test_resolver_answering_the_wrong_answer(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "resolver answers a wrong record", "path gone", FREEZE
    s2 = lab.servers[1]
    try:
        lab.restart_resolver(s2, daemons.unbound_config(lab.lab, s2, health="sick"))
        row.time("gone", lab.wait_server(s2, present=False, timeout=FREEZE))
        assert daemons.dig(lab.lab, lab.lab.ns(s2.name), s2.v4, "health.example.") == "sick"
        lab.wait_zebra_agrees()
    finally:
        lab.restart_resolver(s2, wait=True)


def test_resolver_not_listening_on_the_service_address(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault = "sidecar", "resolver not listening on the service address"
    row.expected, row.bound = "path gone (never announced)", DEATH
    s3 = lab.servers[2]
    try:
        lab.restart_resolver(s3, daemons.unbound_config(lab.lab, s3, interfaces=[s3.v4, s3.v6]))
        row.time("gone", lab.wait_server(s3, present=False, timeout=DEATH))
        time.sleep(1.0)  # the admin address answers: still not announced
        assert "s3" not in lab.server_paths()
        lab.wait_zebra_agrees()
    finally:
        lab.restart_resolver(s3, wait=True)


# anycastd's own process tree ---------------------------------------------------------------------------


def test_anycastd_killed(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "anycastd SIGKILL", "path gone", DEATH
    s3 = lab.servers[2]
    lab.kill_anycastd(s3)
    row.time("gone", lab.wait_server(s3, present=False, timeout=DEATH))
    lab.wait_zebra_agrees()
    lab.start_anycastd(s3)  # what systemd's Restart= does
    still_in_control(lab, s3, row)


def test_anycastd_stopped(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "anycastd SIGSTOP", "path gone", FREEZE
    s1 = lab.servers[0]
    lab.signal_anycastd(s1, signal.SIGSTOP)
    row.time("gone", lab.wait_server(s1, present=False, timeout=FREEZE))
    lab.wait_zebra_agrees()
    lab.signal_anycastd(s1, signal.SIGCONT)
    still_in_control(lab, s1, row)


def test_exabgp_helper_killed(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "ExaBGP's helper SIGKILL", "path gone", DEATH
    s2 = lab.servers[1]
    helper, exabgp = lab.helper_pid(s2), lab.exabgp_pid(s2)
    assert helper is not None and exabgp is not None
    lab.lab.exec(lab.lab.ns(s2.name), "kill", "-KILL", str(helper))
    row.time("gone", lab.wait_server(s2, present=False, timeout=DEATH))
    wait_until(lambda: lab.exabgp_pid(s2) != exabgp, 5, what="a fresh ExaBGP")  # it did not run on alone
    still_in_control(lab, s2, row)


def test_exabgp_helper_stopped(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "ExaBGP's helper SIGSTOP", "path gone", FREEZE
    s3 = lab.servers[2]
    helper = lab.helper_pid(s3)
    assert helper is not None
    lab.lab.exec(lab.lab.ns(s3.name), "kill", "-STOP", str(helper))
    row.time("gone", lab.wait_server(s3, present=False, timeout=FREEZE))
    wait_until(lambda: lab.helper_pid(s3) not in (None, helper), 10, what="a fresh helper")
    still_in_control(lab, s3, row)
    assert helper not in lab.lab.commands(s3.name)  # the stopped one died with its ExaBGP


def test_exabgp_killed(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "ExaBGP SIGKILL", "path gone", DEATH
    s1 = lab.servers[0]
    exabgp = lab.exabgp_pid(s1)
    assert exabgp is not None
    lab.lab.exec(lab.lab.ns(s1.name), "kill", "-KILL", str(exabgp))
    row.time("gone", lab.wait_server(s1, present=False, timeout=DEATH))
    still_in_control(lab, s1, row)


def test_exabgp_stopped(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar", "ExaBGP SIGSTOP", "path gone", FREEZE
    s2 = lab.servers[1]
    exabgp = lab.exabgp_pid(s2)
    assert exabgp is not None
    lab.lab.exec(lab.lab.ns(s2.name), "kill", "-STOP", str(exabgp))
    row.time("gone", lab.wait_server(s2, present=False, timeout=FREEZE))
    status = lab.anycastctl(s2, "status")
    assert "answered no heartbeat" in status.stdout, status.stdout
    still_in_control(lab, s2, row)


# the router and the link --------------------------------------------------------------------------------


def test_bgpd_killed_and_restarted(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault = "sidecar", "bgpd SIGKILL, then started again"
    row.expected, row.bound = "every path gone, then every path back", ROUTER_BACK
    lab.stop_frr("bgpd", signal.SIGKILL)
    row.time("gone", lab.wait_paths(0, timeout=DEATH))  # zebra removes a dead client's routes
    lab.start_frr("bgpd")
    row.time("back", lab.wait_paths(3, timeout=ROUTER_BACK))
    lab.wait_zebra_agrees()


def test_zebra_killed_then_frr_restarted(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault = "sidecar", "zebra SIGKILL, then FRR restarted (systemctl restart frr)"
    row.expected, row.bound = "paths kept in the kernel meanwhile; every path back, zebra agrees", ROUTER_BACK
    lab.stop_frr("zebra", signal.SIGKILL)
    assert len(lab.paths(SERVICE_V4)) == 3 and len(lab.paths(SERVICE_V6)) == 3  # no black hole meanwhile
    # A zebra started alone is not sent bgpd's routes again (FRR 8.4: its bgp client adds 0 routes),
    # so a dead zebra means restarting FRR as a whole, as its service unit does.
    lab.stop_frr("bgpd", signal.SIGTERM)
    started = time.monotonic()
    lab.start_frr(*lab.FRR_DAEMONS)
    lab.wait_paths(3, timeout=ROUTER_BACK)
    row.time("back", time.monotonic() - started)
    lab.wait_zebra_agrees()
    s1 = lab.servers[0]
    lab.kill_resolver(s1)  # and a fault after the restart still reaches the kernel
    # FREEZE, not DEATH: a bgpd that has just started takes longer over its first withdrawals.
    row.time("then resolver SIGKILL -> gone", lab.wait_server(s1, present=False, timeout=FREEZE))
    lab.wait_zebra_agrees()


@pytest.mark.parametrize("flaps", [1, 3])
def test_link_down_and_up(lab: BgpLab, row: Row, flaps: int) -> None:
    row.variant, row.fault = "sidecar", f"router-server link down and up ({flaps}x)"
    row.expected, row.bound = "path gone while down, back in both families after; zebra agrees", ROUTER_BACK
    s1 = lab.servers[0]
    for _ in range(flaps):
        lab.set_link(s1, False)
        row.time("gone", lab.wait_server(s1, present=False, timeout=DEATH))
        lab.wait_zebra_agrees()
        lab.set_link(s1, True)
        row.time("back", lab.wait_paths(3, timeout=ROUTER_BACK))
        lab.wait_zebra_agrees()


def test_router_reboot(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault = "sidecar", "every FRR daemon stopped and started (a router reboot)"
    row.expected, row.bound = "every path back; zebra agrees", ROUTER_BACK
    for daemon in reversed(lab.FRR_DAEMONS):
        lab.stop_frr(daemon, signal.SIGTERM)
    assert not lab.paths(SERVICE_V4) and not lab.paths(SERVICE_V6)
    started = time.monotonic()
    lab.start_frr(*lab.FRR_DAEMONS)
    lab.wait_paths(3, timeout=ROUTER_BACK)
    row.time("back", time.monotonic() - started)
    lab.wait_zebra_agrees()


def test_five_percent_probe_loss_withdraws_nothing(lab: BgpLab, row: Row) -> None:
    seconds = 20.0
    row.variant, row.fault = "sidecar", f"5% of probe packets dropped on every server for {seconds:g} s"
    row.expected, row.bound = "no path ever leaves", None
    with lab.probe_loss(5), FibWatch(lab.lab.router, SERVICE_V4) as v4, FibWatch(lab.lab.router, SERVICE_V6) as v6:
        time.sleep(seconds)
    row.measured["route changes"] = float(len(v4.seen()) - 1 + len(v6.seen()) - 1)
    assert len(v4.seen()) == 1 and len(v6.seen()) == 1, (v4.seen(), v6.seen())
