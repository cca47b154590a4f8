"""Operating anycastd in the lab: drains under load, maintenance across restarts, reloads, the socket.

The CLI runs as a real subprocess against the real daemon; what counts is
the router's FIB and the answers the client gets.
"""

from __future__ import annotations

import json
import signal
import socket
import time

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, wait_until

#: The issue asks for at least 500 queries/s, each from its own source port.
RATE = 600


def test_planned_drain_then_stopping_the_resolver_loses_no_query(lab: BgpLab) -> None:
    s2 = lab.servers[1]
    load = lab.client("203.0.113.53", count=RATE * 7, rate=RATE)
    time.sleep(1.5)
    drain = lab.anycastctl(s2, "withdraw", "dns", "--reason", "kernel upgrade", "--wait", "--timeout", "20", "--json")
    assert drain.returncode == 0, drain.stderr
    reply = json.loads(drain.stdout)
    assert reply["withdrawn"] == ["dns"]
    assert reply["drain"]["drained"] is True and reply["drain"]["method"] == "nftables", reply
    assert "s2" not in lab.server_paths()
    lab.kill_resolver(s2)  # safe now: nothing reaches it
    result = lab.client_result(load)
    assert result["lost"] == 0, result
    assert result["answered"].get("s2", 0) > 0  # it did carry traffic before the drain
    assert sum(result["answered"].values()) == RATE * 7


def test_stopping_anycastd_then_its_resolver_loses_no_query(lab: BgpLab) -> None:
    s3 = lab.servers[2]
    load = lab.client("203.0.113.53", count=RATE * 5, rate=RATE)
    time.sleep(1.5)
    lab.lab.stop(daemons.anycastd_key(s3), signal.SIGTERM)  # returns once anycastd has exited
    assert "s3" not in lab.server_paths()
    lab.kill_resolver(s3)
    result = lab.client_result(load)
    assert result["lost"] == 0, result
    assert result["answered"].get("s3", 0) > 0


def test_maintenance_survives_a_restart_of_anycastd(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    assert lab.anycastctl(s1, "withdraw", "dns", "--reason", "disk swap").returncode == 0
    lab.wait_server(s1, present=False, timeout=5)
    lab.kill_anycastd(s1)
    lab.start_anycastd(s1)
    lab.anycastctl_ready(s1)
    wait_until(lambda: lab.bgp_established(s1), 15, what="s1's BGP session")
    time.sleep(2.0)  # several rise periods: a healthy resolver, an up session, and still no route
    assert "s1" not in lab.server_paths()
    status = json.loads(lab.anycastctl(s1, "status", "--json").stdout)
    dns = status["services"][0]
    assert dns["state"] == "maintenance" and dns["maintenance"]["reason"] == "disk swap"
    assert dns["maintenance"]["who"] == "root"
    assert dns["checks"][0]["state"] == "up"  # the probes ran; maintenance overrode them
    announce = lab.anycastctl(s1, "announce", "dns")
    assert announce.stdout == "dns: maintenance ended; announced again once its probes pass\n"
    lab.wait_server(s1, present=True, timeout=5)


def test_reload_changed_unchanged_and_invalid_without_a_flap(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    base = daemons.anycastd_config(lab.lab, s1)
    two = base + daemons.extra_service(s1, "extra", ["203.0.113.54/32"])
    # The router accepts from s1 only s1's own prefixes: what `anycastd frr-policy` adds for the new service.
    permit = "ip prefix-list FROM-s1-V4 seq 20 permit 203.0.113.54/32"
    lab.vtysh_config(permit)
    try:
        _reload_without_a_flap(lab, two)
    finally:
        lab.vtysh_config("no " + permit)


def _reload_without_a_flap(lab: BgpLab, two: str) -> None:
    s1 = lab.servers[0]
    lab.reload_anycastd(s1, two, expect="reloaded")
    wait_until(lambda: s1.v4 in lab.paths("203.0.113.54/32"), 10, what="the added service's route")
    with FibWatch(lab.lab.router, SERVICE_V4) as dns, FibWatch(lab.lab.router, "203.0.113.54/32") as extra:
        log = lab.reload_anycastd(s1, two, expect="reloaded")  # unchanged
        assert "unchanged ['dns', 'extra']" in log
        slower = two.replace("probe_service_addresses: false", "probe_service_addresses: false\n        interval: 0.3")
        log = lab.reload_anycastd(s1, slower, "reloaded")
        assert "changed ['extra']" in log and "unchanged ['dns']" in log
        wait_until(lambda: len(extra.seen()) == 3, 10, what="the changed service withdrawn and back")
        log = lab.reload_anycastd(s1, two.replace("qtype: TXT", "qtype: TXTT"), expect="reload refused")
        assert "services.dns.checks[0].qtype: is not a DNS record type, got 'TXTT'" in log
        log = lab.reload_anycastd(s1, two.replace("local_asn: 65001", "local_asn: 65111"), expect="reload refused")
        assert "local_asn changed; only a restart of anycastd applies that" in log
        time.sleep(0.5)
    assert len(dns.seen()) == 1 and {s.v4 for s in lab.servers} == dns.seen()[0], dns.changes  # never flapped
    assert [s1.v4 in hops for hops in extra.seen()] == [True, False, True], extra.changes  # restarted, once
    assert lab.anycastctl(s1, "status", "extra").returncode == 0  # the running configuration is the good one


def test_garbage_on_the_control_socket_changes_nothing(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    _, _, path = daemons.anycastd_paths(lab.lab, s1)
    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        for payload in (b"\x00\xffgarbage\n", b'{"command": "withdraw", "service": "dns", "rea', b"{" * 20000 + b"\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                answer = sock.recv(65536)
                assert answer == b"" or b'"ok":false' in answer, answer
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(str(path))  # connects and never writes, while others are served
        try:
            status = lab.anycastctl(s1, "status")
            assert status.returncode == 0 and "dns" in status.stdout
        finally:
            idle.close()
        time.sleep(0.5)
    assert len(watch.seen()) == 1 and len(watch.seen()[0]) == 3, watch.changes


def test_status_check_and_metrics_tell_the_truth(lab: BgpLab) -> None:
    s2 = lab.servers[1]
    human = lab.anycastctl(s2, "status")
    assert human.returncode == 0
    assert human.stdout.splitlines()[1].split()[:3] == ["dns", "up", "yes"]
    status = json.loads(lab.anycastctl(s2, "status", "--json").stdout)
    dns = status["services"][0]
    assert [p["announced"] for p in dns["prefixes"]] == [True, True]
    assert set(status["bgp"].values()) == {"up"} and status["exabgp"]["pid"] == lab.exabgp_pid(s2)
    assert dns["checks"][0]["last"]["ok"] is True and dns["checks"][0]["last"]["latency_ms"] > 0
    check = lab.anycastctl(s2, "check", "dns")
    assert check.returncode == 0 and check.stdout.startswith("dns checks[0]: ok ")
    page = lab.metrics(s2)
    assert 'anycastd_service_announced{service="dns"} 1.0' in page
    assert f'anycastd_bgp_session_up{{neighbor="{s2.router_v4}"}} 1.0' in page
    assert 'anycastd_probe_duration_seconds_count{check="0",service="dns"}' in page
    lab.kill_resolver(s2)
    lab.wait_server(s2, present=False, timeout=5)
    check = lab.anycastctl(s2, "check", "dns")
    assert check.returncode == 4 and "connection refused" in check.stdout
    page = lab.metrics(s2)
    assert 'anycastd_service_announced{service="dns"} 0.0' in page
    assert 'anycastd_probe_failures_total{check="0",reason="refused",service="dns"}' in page
    wrong = lab.anycastctl(s2, "withdraw", "dsn", "--reason", "typo")
    assert wrong.returncode == 1 and wrong.stderr == "anycastctl: no service 'dsn' (configured: dns)\n"
