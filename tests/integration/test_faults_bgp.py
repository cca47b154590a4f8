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

from anycastd_lab import daemons
from anycastd_lab.base import process_running
from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Server, wait_until
from tests.helpers import Row

DEATH = 1.0  # a process of the tree dies: the path is gone within this (issue 14)
FREEZE = 3.0  # a process freezes
STOPPED = 1.0  # a process of the tree is stopped: not running, so caught at exabgp.stall (0.25 s), not the watchdog
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


TREE = ("anycastd", "ExaBGP's helper", "ExaBGP")


@pytest.mark.parametrize("process", TREE)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_a_process_of_the_tree_dies_or_freezes(lab: BgpLab, row: Row, process: str, sig: signal.Signals) -> None:
    """Each process anycastd runs, killed or stopped: the path leaves, the old ExaBGP and helper are gone
    (none runs on without the others), and a fresh tree is in control again."""
    bound = DEATH if sig == signal.SIGKILL else STOPPED
    row.variant, row.fault, row.expected, row.bound = "sidecar", f"{process} {sig.name}", "path gone", bound
    server = lab.servers[TREE.index(process)]
    exabgp, helper = lab.exabgp_pid(server), lab.helper_pid(server)
    assert exabgp is not None and helper is not None
    if process == "anycastd" and sig == signal.SIGKILL:
        lab.kill_anycastd(server)
    elif process == "anycastd":
        lab.signal_anycastd(server, sig)
    else:
        lab.lab.exec(
            lab.lab.ns(server.name), "kill", f"-{sig.name[3:]}", str(helper if "helper" in process else exabgp)
        )
    row.time("gone", lab.wait_server(server, present=False, timeout=bound))
    lab.wait_zebra_agrees()
    if sig == signal.SIGSTOP and process != "anycastd":
        status = lab.anycastctl(server, "status")
        assert "answered no heartbeat" in status.stdout, status.stdout
    if process == "anycastd" and sig == signal.SIGKILL:
        lab.start_anycastd(server)  # what systemd's Restart= does
    elif process == "anycastd":
        lab.signal_anycastd(server, signal.SIGCONT)
    wait_until(
        lambda: lab.exabgp_pid(server) not in (None, exabgp) and lab.helper_pid(server) not in (None, helper),
        10,
        what="a fresh ExaBGP and helper",
    )
    still_in_control(lab, server, row)
    assert not process_running(exabgp) and not process_running(helper)  # stopped ones too: SIGKILL ends them


# the router and the link --------------------------------------------------------------------------------


def test_bgpd_killed_and_restarted(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault = "sidecar", "bgpd SIGKILL, then started again"
    row.expected, row.bound = "every path gone, then every path back", ROUTER_BACK
    lab.stop_frr("bgpd", signal.SIGKILL)
    row.time("gone", lab.wait_paths(0, timeout=DEATH))  # zebra removes a dead client's routes
    lab.start_frr("bgpd")
    row.time("back", lab.wait_paths(3, timeout=ROUTER_BACK))
    lab.wait_zebra_agrees()


def test_link_down_and_up(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault = "sidecar", "router-server link down and up"
    row.expected, row.bound = "path gone while down, back in both families after; zebra agrees", ROUTER_BACK
    gone, back = lab.flap_link(lab.servers[0], gone_within=DEATH, back_within=ROUTER_BACK)
    row.time("gone", gone)
    row.time("back", back)


def test_a_link_flapping_three_times_is_held_back(lab: BgpLab, row: Row) -> None:
    """Three link flaps, each seen by the server's BFD (down, then up again): the first two are forgiven, the
    third holds the router back (BFD flap damping, anycastd.announce.flaps); `anycastctl announce` ends it.
    (With no wait for BFD between flaps, how many failures the server counts, and so whether it holds, is a
    race: this test once failed in CI on exactly that.)"""
    row.variant, row.fault = "sidecar", "router-server link down and up 3 times, BFD down and up each time"
    row.expected = (
        "back after flaps 1 and 2; after the 3rd, held back by the server's BFD flap damping (out of the FIB, "
        "zebra agrees) until `anycastctl announce`"
    )
    row.bound = ROUTER_BACK
    s1 = lab.servers[0]
    for flap in range(3):
        lab.set_link(s1, False)
        row.time("gone", lab.wait_server(s1, present=False, timeout=DEATH))
        lab.wait_server_bfd(s1, "down", timeout=DEATH)  # the server counts this failure
        lab.set_link(s1, True)
        if flap < 2:
            row.time("back", lab.wait_paths(3, timeout=ROUTER_BACK))
            lab.wait_server_bfd(s1, "up", timeout=ROUTER_BACK)
    sessions = lab.server_bfd(s1)
    assert all(v["damping"]["held"] for v in sessions.values()), sessions
    lab.wait_server_bfd(s1, "up", timeout=ROUTER_BACK)  # the link is fine again, and still nothing is announced
    wait_until(lambda: lab.bgp_established(s1), ROUTER_BACK, what="s1's BGP session")
    assert "s1" not in lab.server_paths(SERVICE_V4) | lab.server_paths(SERVICE_V6)
    lab.wait_zebra_agrees()
    lab.undrain(s1)  # `anycastctl announce --all`: an operator vouches for the link
    row.time("announce -> back", lab.wait_paths(3, timeout=ROUTER_BACK))
    lab.wait_zebra_agrees()


@pytest.mark.parametrize("zebra_crash", [False, True], ids=["reboot", "zebra-crash"])
def test_frr_restarted(lab: BgpLab, row: Row, zebra_crash: bool) -> None:
    row.variant = "sidecar"
    if zebra_crash:
        # A zebra started alone is not sent bgpd's routes again (FRR 8.4: its bgp client adds 0 routes),
        # so a dead zebra means restarting FRR as a whole, as its service unit does.
        row.fault = "zebra SIGKILL, then FRR restarted (systemctl restart frr)"
        row.expected = "paths kept in the kernel meanwhile; every path back, zebra agrees"
    else:
        row.fault, row.expected = (
            "every FRR daemon stopped and started (a router reboot)",
            "every path back; zebra agrees",
        )
    row.bound = ROUTER_BACK
    lab.stop_all_frr(zebra_crash)
    held = (len(lab.paths(SERVICE_V4)), len(lab.paths(SERVICE_V6)))
    assert held == ((3, 3) if zebra_crash else (0, 0))  # a crashed zebra leaves no black hole meanwhile
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


def test_five_percent_probe_loss_withdraws_nothing(lab: BgpLab, row: Row) -> None:
    seconds = 20.0
    row.variant, row.fault = "sidecar", f"5% of probe packets dropped on every server for {seconds:g} s"
    row.expected, row.bound = "no path ever leaves", None
    with lab.probe_loss(5), FibWatch(lab.lab.router, SERVICE_V4) as v4, FibWatch(lab.lab.router, SERVICE_V6) as v6:
        time.sleep(seconds)
    row.measured["route changes"] = float(len(v4.seen()) - 1 + len(v6.seen()) - 1)
    assert len(v4.seen()) == 1 and len(v6.seen()) == 1, (v4.seen(), v6.seen())
