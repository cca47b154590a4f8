"""The sidecar end to end: what the router's kernel holds while resolvers and anycastd fail.

Every assertion is on the router's FIB (read with pyroute2 in its namespace)
or on real DNS answers from the client namespace, never on logs.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from anycastd.watch.triggers import METHOD
from anycastd_lab.bgp import BgpLab
from anycastd_lab.daemons import anycastd_key
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Server, wait_until

#: anycastd's documented bound for a frozen controller (docs/architecture.md):
#: exabgp.watchdog (1.5 s by default) plus the time to kill ExaBGP and for the router to react.
STALL_BOUND = 3.0


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever inherited it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_three_paths_for_both_families(lab: BgpLab) -> None:
    assert lab.paths(SERVICE_V4) == {s.v4 for s in lab.servers}
    assert lab.paths(SERVICE_V6) == {s.v6 for s in lab.servers}


def test_client_queries_are_answered_by_every_server(lab: BgpLab) -> None:
    for address in ("203.0.113.53", "2001:db8::53"):
        result = lab.queries(address, 60)
        assert result["lost"] == 0
        assert set(result["answered"]) == {"s1", "s2", "s3"}, result


def check_status(lab: BgpLab, server: Server) -> dict[str, Any]:
    """The first check of the dns service, as `anycastctl status --json` shows it."""
    status = json.loads(lab.anycastctl(server, "status", "--json").stdout)
    check: dict[str, Any] = status["services"][0]["checks"][0]
    return check


def test_killed_resolver_leaves_the_fib_and_comes_back(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    before = check_status(lab, s1)
    assert before["detection"] == METHOD and before["detection_note"] is None
    lab.kill_resolver(s1)
    lab.wait_server(s1, present=False, timeout=5)
    # the listener's destruction woke a probe: the schedule never counts as woken
    assert check_status(lab, s1)["woken"] > before["woken"]
    assert lab.server_paths(SERVICE_V4) == {"s2", "s3"}
    assert lab.server_paths(SERVICE_V6) == {"s2", "s3"}
    result = lab.queries("203.0.113.53", 30)
    assert result["lost"] == 0 and set(result["answered"]) == {"s2", "s3"}, result
    lab.start_resolver(s1, wait=False)
    lab.wait_server(s1, present=True, timeout=5)
    lab.wait_paths(3, timeout=5)


def test_frozen_resolver_leaves_the_fib(lab: BgpLab) -> None:
    s2 = lab.servers[1]
    before = check_status(lab, s2)
    lab.signal_resolver(s2, signal.SIGSTOP)
    lab.wait_server(s2, present=False, timeout=5)
    after = check_status(lab, s2)
    # the first timeout was confirmed by short probes, and the stuck queue woke one
    assert after["confirming"] >= before["confirming"] + 2
    assert after["woken"] > before["woken"]
    lab.signal_resolver(s2, signal.SIGCONT)
    lab.wait_server(s2, present=True, timeout=5)


def test_sigkilled_anycastd_takes_its_path_and_exabgp_with_it(lab: BgpLab) -> None:
    s3 = lab.servers[2]
    exabgp = lab.exabgp_pid(s3)
    assert exabgp is not None
    lab.kill_anycastd(s3)
    lab.wait_server(s3, present=False, timeout=2)
    assert lab.server_paths(SERVICE_V6) == {"s1", "s2"}
    wait_until(lambda: dead(exabgp), 2, what="ExaBGP dying with anycastd")
    lab.start_anycastd(s3)
    lab.wait_server(s3, present=True, timeout=20)


def test_frozen_anycastd_is_withdrawn_within_the_documented_bound(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    lab.signal_anycastd(s1, signal.SIGSTOP)
    lab.wait_server(s1, present=False, timeout=STALL_BOUND)
    lab.signal_anycastd(s1, signal.SIGCONT)
    # thawed, it restarts ExaBGP and announces again what is healthy
    lab.wait_server(s1, present=True, timeout=20)


def test_killed_exabgp_is_restarted_and_reannounces(lab: BgpLab) -> None:
    s2 = lab.servers[1]
    first = lab.exabgp_pid(s2)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    lab.wait_server(s2, present=False, timeout=2)
    lab.wait_server(s2, present=True, timeout=20)
    second = lab.exabgp_pid(s2)
    assert second is not None and second != first
    assert lab.anycastd_running(s2)


def test_nothing_is_announced_at_start_until_the_resolver_passes(lab: BgpLab) -> None:
    s3 = lab.servers[2]
    lab.kill_anycastd(s3)
    lab.kill_resolver(s3)
    lab.wait_server(s3, present=False, timeout=2)
    lab.start_anycastd(s3)
    # The BGP session comes up, and still no path: the probes have not passed.
    wait_until(lambda: lab.bgp_established(s3), 20, what="s3's BGP session")
    assert "s3" not in lab.server_paths()
    lab.start_resolver(s3, wait=False)
    lab.wait_server(s3, present=True, timeout=5)


def test_sigterm_withdraws_stops_exabgp_and_exits_0(lab: BgpLab) -> None:
    s2 = lab.servers[1]
    exabgp = lab.exabgp_pid(s2)
    assert exabgp is not None
    proc = lab.lab.processes[anycastd_key(s2)]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "s2" not in lab.server_paths(SERVICE_V4)
    assert "s2" not in lab.server_paths(SERVICE_V6)
    wait_until(lambda: dead(exabgp), 2, what="ExaBGP stopping with anycastd")
