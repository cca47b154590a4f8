"""Fleet safety on real FRR: a fault common to every server degrades the service instead of removing it,
one recovered server alone takes the traffic, and a flapping resolver is damped.

A server is made to fail its health check the way a bad zone pushed everywhere would: its resolver is
reloaded (SIGHUP, no restart) with a health record that no longer matches, while every other query is
still answered (the lab's restore() makes it good again). The route changes and the queries are read
off the router's kernel FIB and the client.
"""

from __future__ import annotations

import itertools
import json
import time

from anycastd_lab.base import DnsLab
from anycastd_lab.bgp import BgpLab
from anycastd_lab.fib import FibWatch
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import SERVICE_V4, Server, wait_until

#: A health check fails after `fall` (3) probes 0.2 s apart; generous for a loaded CI machine.
DETECT = 5.0


def path_of(lab: BgpLab, server: Server) -> str:
    status = json.loads(lab.anycastctl(server, "status", "--json").stdout)
    return str(status["services"][0]["path"])


def bgp_paths(lab: DnsLab) -> dict[str, dict[str, object]]:
    """The router's BGP paths to the IPv4 service address, by the server that sent them."""
    data = json.loads(lab.vtysh(f"show bgp ipv4 unicast {SERVICE_V4} json"))
    by_peer = {s.v4: s.name for s in lab.servers}
    return {by_peer[p["peer"]["peerId"]]: p for p in data.get("paths", []) if p["peer"]["peerId"] in by_peer}


def test_one_failing_server_leaves_the_fib_but_its_tagged_path_stays_in_bgp(lab: BgpLab) -> None:
    s2 = lab.servers[1]
    lab.set_health_record(s2, "sick")
    lab.wait_server(s2, present=False, timeout=DETECT)
    assert lab.server_paths() == {"s1", "s3"}
    assert path_of(lab, s2) == "graceful-shutdown"
    tagged = bgp_paths(lab)["s2"]
    assert tagged["locPrf"] == 0 and "gracefulShutdown" in json.dumps(tagged["community"]), tagged
    assert bgp_paths(lab)["s1"].get("locPrf") != 0  # untagged: the default local preference
    result = lab.queries("203.0.113.53", 60)
    assert result["lost"] == 0 and set(result["answered"]) == {"s1", "s3"}, result
    lab.set_health_record(s2, "healthy")
    lab.wait_server(s2, present=True, timeout=DETECT)
    assert path_of(lab, s2) == "announced"


def test_every_server_failing_at_once_keeps_every_path_and_every_query_answered(lab: BgpLab) -> None:
    load = lab.client("203.0.113.53", count=300 * 8, rate=300)
    time.sleep(1.0)
    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        for s in lab.servers:
            lab.set_health_record(s, "sick")
        wait_until(lambda: all(path_of(lab, s) == "graceful-shutdown" for s in lab.servers), DETECT, what="all failing")
        lab.wait_paths(3, timeout=DETECT)
        time.sleep(1.0)
    result = lab.client_result(load)
    assert result["lost"] == 0, result
    assert watch.seen()[-1] == {s.v4 for s in lab.servers}  # every path, and not one vanished for good
    assert all(hops for hops in watch.seen()), watch.seen()  # never an empty FIB
    during = lab.queries("203.0.113.53", 90)
    assert during["lost"] == 0 and set(during["answered"]) == {"s1", "s2", "s3"}, during
    # one recovers: it alone carries the service
    s2 = lab.servers[1]
    lab.set_health_record(s2, "healthy")
    wait_until(lambda: lab.server_paths() == {"s2"}, DETECT, what="s2 alone in the FIB")
    after = lab.queries("203.0.113.53", 60)
    assert after["lost"] == 0 and set(after["answered"]) == {"s2"}, after


def flap(lab: DnsLab, server: Server, seconds: int) -> int:
    """``server``'s health record goes bad and good again every second: its path's moves in the FIB."""
    with FibWatch(lab.lab.router, SERVICE_V4) as watch:
        start = time.monotonic()
        for tick in range(seconds):
            lab.set_health_record(server, "sick" if tick % 2 == 0 else "healthy")
            time.sleep(max(0.0, start + tick + 1 - time.monotonic()))
        time.sleep(1.0)
    seen = [server.v4 in hops for hops in watch.seen()]
    return sum(1 for was, now in itertools.pairwise(seen) if was != now)


def test_a_flapping_resolver_is_damped_and_announce_lets_it_back(lab: BgpLab) -> None:
    s3 = lab.servers[2]
    moves = flap(lab, s3, 14)
    assert 1 <= moves <= 8, moves  # undamped: one change a second, 14 in all
    assert "s3" not in lab.server_paths()  # healthy now, but suppressed
    status = json.loads(lab.anycastctl(s3, "status", "--json").stdout)["services"][0]
    assert status["healthy"] and status["damping"]["suppressed"], status
    assert 'anycastd_damping_suppressed{service="dns"} 1.0' in lab.metrics(s3)
    announce = lab.anycastctl(s3, "announce", "dns")
    assert announce.returncode == 0 and "flap penalty cleared" in announce.stdout, announce
    lab.wait_server(s3, present=True, timeout=DETECT)


def test_router_side_every_server_failing_at_once_keeps_every_route(router_lab: StaticLab) -> None:
    lab = router_lab
    for s in lab.servers:
        lab.set_health_record(s, "sick")

    def degraded() -> str | None:
        service = json.loads(lab.anycastctl("status", "--json").stdout)["services"][0]
        return None if any(v["healthy"] for v in service["servers"]) else service["degraded"]

    wait_until(lambda: degraded() is not None, DETECT, what="every server failed")
    assert "keeping the routes from before the failures began (s1, s2, s3)" in (degraded() or "")
    lab.wait_paths(3, timeout=DETECT)
    during = lab.queries("203.0.113.53", 90)
    assert during["lost"] == 0 and set(during["answered"]) == {"s1", "s2", "s3"}, during
    s1 = lab.servers[0]
    lab.set_health_record(s1, "healthy")
    wait_until(lambda: lab.server_paths() == {"s1"}, DETECT, what="s1 alone in the FIB")


def test_router_side_a_flapping_server_is_damped_and_announce_lets_it_back(router_lab: StaticLab) -> None:
    lab = router_lab
    s3 = lab.servers[2]
    moves = flap(lab, s3, 14)
    assert 1 <= moves <= 8, moves
    assert "s3" not in lab.server_paths()
    server = json.loads(lab.anycastctl("status", "--json").stdout)["services"][0]["servers"][2]
    assert server["damping"]["suppressed"], server
    announce = lab.anycastctl("announce", "--server", "s3")
    assert announce.returncode == 0 and "flap penalty cleared" in announce.stdout, announce
    lab.wait_server(s3, present=True, timeout=DETECT)
