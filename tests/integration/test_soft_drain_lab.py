"""Soft drains on real FRR (`anycastctl withdraw --soft`): the path stays, tagged GRACEFUL_SHUTDOWN, so a
soft-drained server gets no query while another is healthy, and a rollout that drains every server at once
degrades the service instead of removing it. Queries are counted by the lab client under load; the paths
are read off the router's kernel FIB and bgpd.
"""

from __future__ import annotations

import json
import threading
import time

from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.topology import SERVICE_V4, Server, wait_until
from tests.integration.test_fleet_lab import bgp_paths, path_of

ADDRESS = SERVICE_V4.split("/")[0]
RATE = 300  # queries a second, each its own flow
DRAIN_WAIT = 10.0


def soft_drain(lab: BgpLab, server: Server, out: dict[str, int]) -> None:
    """`anycastctl withdraw dns --soft --wait` on ``server``: its exit code into ``out``."""
    result = lab.anycastctl(
        server, "withdraw", "dns", "--soft", "--reason", "rollout", "--wait", "--timeout", f"{DRAIN_WAIT:g}"
    )
    out[server.name] = result.returncode


def test_a_soft_drained_server_gets_no_query_while_the_others_are_healthy(lab: BgpLab) -> None:
    s1 = lab.servers[0]
    load = lab.client(ADDRESS, count=RATE * 6, rate=RATE)
    time.sleep(1.0)
    codes: dict[str, int] = {}
    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        soft_drain(lab, s1, codes)
    assert codes == {"s1": 0}  # --wait returned drained: no query reached s1 for drain.quiet
    result = lab.client_result(load)
    assert result["lost"] == 0, result
    assert watch.seen()[-1] == {s.v4 for s in lab.servers[1:]}
    assert all(hops for hops in watch.seen()), watch.seen()
    tagged = bgp_paths(lab)["s1"]  # still in BGP, tagged; out of the FIB
    assert tagged["locPrf"] == 0 and "gracefulShutdown" in json.dumps(tagged["community"]), tagged
    assert path_of(lab, s1) == "graceful-shutdown"
    doc = json.loads(lab.anycastctl(s1, "--json", "status").stdout)["services"][0]
    assert doc["maintenance"]["soft"] is True and doc["state"] == "maintenance"
    assert "soft maintenance: rollout" in lab.anycastctl(s1, "status").stdout
    after = lab.queries(ADDRESS, 600)
    assert after["lost"] == 0 and set(after["answered"]) == {"s2", "s3"}, after


def test_every_server_soft_drained_at_once_under_load_loses_no_query(lab: BgpLab) -> None:
    load = lab.client(ADDRESS, count=int(RATE * (DRAIN_WAIT + 4)), rate=RATE)  # outlasts every --wait
    time.sleep(1.0)
    codes: dict[str, int] = {}
    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        drains = [threading.Thread(target=soft_drain, args=(lab, s, codes)) for s in lab.servers]
        for t in drains:
            t.start()
        wait_until(lambda: all(path_of(lab, s) == "graceful-shutdown" for s in lab.servers), 5, what="all tagged")
        lab.wait_paths(3, timeout=5)  # every path tagged alike: all three used again
        for t in drains:
            t.join()
    result = lab.client_result(load)
    assert result["lost"] == 0, result
    assert all(hops for hops in watch.seen()), watch.seen()  # never an empty FIB
    assert watch.seen()[-1] == {s.v4 for s in lab.servers}
    # the queries never stopped, so no drain can report "drained": each --wait timed out (exit 3)
    assert codes == {"s1": 3, "s2": 3, "s3": 3}, codes
    during = lab.queries(ADDRESS, 300)
    assert during["lost"] == 0 and set(during["answered"]) == {"s1", "s2", "s3"}, during
    # the one that comes back first alone carries the service
    s2 = lab.servers[1]
    assert lab.anycastctl(s2, "announce", "dns").returncode == 0
    wait_until(lambda: lab.server_paths() == {"s2"}, 5, what="s2 alone in the FIB")
