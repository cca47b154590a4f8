"""The fault matrix, dead hosts: BFD through FRR's bfdd takes a server that dies whole out of the router's FIB.

Every server's anycastd runs bfdd with 100 ms x 3 on both sessions, as the router's profile
(frr/bgp/frr.conf) does: a server that stops sending (blackholed, frozen) leaves the kernel FIB
after the BFD detection time, where without BFD the 3 s hold timer decided. The bound here,
DEAD_HOST, sits between the two: a run that met it cannot have been decided by the hold timer.
The times themselves are measured by bench/bfd.py, side by side with the hold timer.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, wait_until
from tests.helpers import Row

#: BFD's 300 ms detection plus the router's work, with room for a busy machine; under the 3 s hold time.
DEAD_HOST = 1.5
BACK = 30.0
#: bfdd is asked for its sessions every 0.5 s and killed when it has not answered within 1 s.
BFDD_NOTICED = 5.0


def test_bfd_comes_up_with_the_routers_profile_beside_exabgp(lab: BgpLab) -> None:
    """FRR 8.4's `neighbor X bfd profile` works with ExaBGP as the BGP speaker and bfdd as the BFD speaker on the
    same address, and the profile (first in frr.conf) is applied: 100 ms x 3 both ways."""

    def peers() -> dict[str, dict[str, object]]:
        return {p["peer"]: p for p in json.loads(lab.vtysh("show bfd peers json"))}

    # Up, the sessions leave BFD's slow start (1 s) for the negotiated intervals with a poll sequence.
    wait_until(lambda: all(p["remote-transmit-interval"] == 100 for p in peers().values()), 5, what="100 ms negotiated")
    peers_now = peers()
    for s in lab.servers:
        for address in (s.v4, s.v6):
            peer = peers_now[address]
            assert peer["status"] == "up", peer
            assert (peer["transmit-interval"], peer["receive-interval"], peer["detect-multiplier"]) == (100, 100, 3)
            assert (peer["remote-transmit-interval"], peer["remote-detect-multiplier"]) == (100, 3)
    s1 = lab.servers[0]

    def status() -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(lab.anycastctl(s1, "--json", "status").stdout)
        return doc

    # anycastd asks bfdd every 0.5 s
    wait_until(lambda: status()["bfd"]["sessions"][s1.router_v4]["bfdd"]["remote_receive_ms"] == 100, 5)
    doc = status()
    sessions = doc["bfd"]["sessions"]
    assert {n: v["state"] for n, v in sessions.items()} == {s1.router_v4: "up", s1.router_v6: "up"}
    assert sessions[s1.router_v4]["bfdd"]["remote_receive_ms"] == 100
    assert doc["bfd"]["pid"] == lab.bfdd_pid(s1)
    text = lab.anycastctl(s1, "status").stdout
    assert f"BFD: {s1.router_v4} up (100 ms x 3)" in text
    metrics = lab.metrics(s1)
    assert f'anycastd_bfd_up{{neighbor="{s1.router_v4}"}} 1.0' in metrics
    assert f'anycastd_bfd_transitions_total{{neighbor="{s1.router_v4}",to="up"}}' in metrics


def test_blackholed_host(lab: BgpLab, row: Row) -> None:
    """Every frame from the server dropped, no carrier change: a power cut or a kernel panic."""
    row.variant, row.fault, row.expected, row.bound = "sidecar + BFD", "host blackholed", "path gone", DEAD_HOST
    s1 = lab.servers[0]
    lab.blackhole(s1)
    row.time("gone", lab.wait_server(s1, present=False, timeout=DEAD_HOST))
    wait_until(lambda: "s1" not in lab.server_paths(SERVICE_V6), DEAD_HOST, what="s1's IPv6 path leaving")
    assert lab.server_paths() == lab.server_paths(SERVICE_V6) == {"s2", "s3"}
    lab.wait_zebra_agrees()
    lab.blackhole(s1, on=False)
    row.time("back after the blackhole is lifted", lab.wait_server(s1, present=True, timeout=BACK))


def test_frozen_host(lab: BgpLab, row: Row) -> None:
    """Every process on the server stopped (anycastd, ExaBGP, bfdd, the resolver); its kernel still answers TCP."""
    row.variant, row.fault, row.expected, row.bound = (
        "sidecar + BFD",
        "host frozen (every process)",
        "path gone",
        DEAD_HOST,
    )
    s2 = lab.servers[1]
    lab.freeze_host(s2)
    row.time("gone", lab.wait_server(s2, present=False, timeout=DEAD_HOST))
    lab.wait_zebra_agrees()
    lab.thaw_host(s2)
    row.time("back after thawing", lab.wait_server(s2, present=True, timeout=BACK))


def test_bfdd_killed_is_restarted(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar + BFD", "bfdd SIGKILL", "restarted; path kept", BACK
    s3 = lab.servers[2]
    old = lab.bfdd_pid(s3)
    assert old is not None
    offset = lab.log_size(s3)
    lab.lab.exec(lab.lab.ns(s3.name), "kill", "-KILL", str(old))
    wait_until(lambda: lab.bfdd_pid(s3) not in (None, old), BFDD_NOTICED, what="a new bfdd on s3")
    assert "bfdd exited (killed by SIGKILL)" in lab.log_since(s3, offset)
    lab.wait_bfd(s3, timeout=BACK)
    row.time("path there", lab.wait_server(s3, present=True, timeout=BACK))
    lab.kill_resolver(s3)  # still in control
    lab.wait_server(s3, present=False, timeout=1.0)


def test_bfdd_frozen_is_noticed_killed_and_restarted(lab: BgpLab, row: Row) -> None:
    """A frozen bfdd sends nothing: the router's BFD goes down and bgpd resets the BGP session (Cease/BFD Down),
    but ExaBGP, alive, connects again at once, so the path stays (in the FIB, it blinks or not at all). anycastd
    notices the frozen bfdd and starts a fresh one, which brings BFD, and with it fast failover, back."""
    row.variant, row.fault, row.expected, row.bound = (
        "sidecar + BFD", "bfdd SIGSTOP", "bfdd killed and restarted; path kept", BFDD_NOTICED,
    )  # fmt: skip
    s1 = lab.servers[0]
    old = lab.bfdd_pid(s1)
    assert old is not None
    offset = lab.log_size(s1)
    lab.lab.exec(lab.lab.ns(s1.name), "kill", "-STOP", str(old))
    started = time.monotonic()
    lab.wait_bfd(s1, up=False, timeout=DEAD_HOST)
    wait_until(lambda: lab.bfdd_pid(s1) not in (None, old), BFDD_NOTICED, what="a new bfdd on s1")
    row.time("a new bfdd", time.monotonic() - started)
    assert "bfdd did not answer within 1 s" in lab.log_since(s1, offset)
    lab.wait_bfd(s1, timeout=BACK)
    row.time("BFD up again", time.monotonic() - started)
    assert "s1" in lab.server_paths()


def test_bfdd_dies_with_anycastd(lab: BgpLab, row: Row) -> None:
    row.variant, row.fault, row.expected, row.bound = "sidecar + BFD", "anycastd SIGKILL", "bfdd gone too", 1.0
    s2 = lab.servers[1]
    bfdd = lab.bfdd_pid(s2)
    assert bfdd is not None
    lab.kill_anycastd(s2)
    row.time("path gone", lab.wait_server(s2, present=False, timeout=1.0))
    wait_until(lambda: lab.bfdd_pid(s2) is None, 1.0, what="bfdd dying with anycastd")
    lab.wait_bfd(s2, up=False, timeout=DEAD_HOST)


def test_without_bfd_the_sidecar_is_as_before(lab: BgpLab) -> None:
    """No `bfd` key: no bfdd, no BFD in status, and the router (which asks for BFD) still takes the paths."""
    s1 = lab.servers[0]
    lab.kill_anycastd(s1)
    lab.wait_server(s1, present=False)
    lab.start_anycastd(s1, daemons.anycastd_config(lab.lab, s1, bfd=None))
    lab.wait_server(s1, present=True, timeout=BACK)
    assert lab.server_paths(SERVICE_V6) == {"s1", "s2", "s3"}
    assert lab.bfdd_pid(s1) is None
    assert json.loads(lab.anycastctl(s1, "--json", "status").stdout)["bfd"] is None
    assert lab.bfd_sessions().get(s1.v4) != "up"


def test_bfd_statuses_are_degraded_while_a_session_is_down(lab: BgpLab) -> None:
    s3 = lab.servers[2]
    pid = lab.bfdd_pid(s3)
    assert pid is not None
    lab.lab.exec(lab.lab.ns(s3.name), "kill", f"-{int(signal.SIGSTOP)}", str(pid))
    try:
        wait_until(
            lambda: lab.anycastctl(s3, "status").returncode == 6, BFDD_NOTICED, what="status exiting 6 (degraded)"
        )
    finally:
        lab.lab.exec(lab.lab.ns(s3.name), "kill", "-CONT", str(pid), check=False)
    assert lab.server_paths(SERVICE_V4) >= {"s1", "s2"}
