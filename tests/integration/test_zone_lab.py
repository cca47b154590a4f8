"""A zone check (`kind: zone`) against a real BIND secondary of a real hidden primary: when transfers are blocked
and the primary's zone changes, the stale secondary leaves the router's FIB after max_lag, and comes back when it
catches up."""

from __future__ import annotations

import json
import time

import pytest

from anycastd_lab import zones
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import Server, wait_until

MAX_LAG = 2.0
INTERVAL, FALL = 0.5, 2


def zone_status(lab: BgpLab, server: Server) -> dict[str, object]:
    reply = lab.anycastctl(server, "status", "--json")
    status = json.loads(reply.stdout)
    assert "services" in status, f"{reply.stdout} {reply.stderr}"
    check = status["services"][0]["checks"][1]
    assert check["kind"] == "zone", check
    return dict(check["last"] or {})


def zone_config(lab: BgpLab, server: Server) -> str:
    extra = f"""
      - kind: zone
        address: {server.v4}
        zones: [{zones.ZONE}]
        primary: {server.router_v4}
        primary_port: {zones.PRIMARY_PORT}
        max_lag: {MAX_LAG}
        interval: {INTERVAL}
        timeout: 0.3
        fall: {FALL}
"""
    return lab.anycastd_config(server).rstrip("\n") + extra


def test_a_secondary_that_cannot_transfer_leaves_the_fib_after_max_lag_and_returns_when_it_catches_up(
    lab: BgpLab,
) -> None:
    server = next((s for s in lab.servers if s.resolver == "bind"), None)
    if server is None:
        pytest.skip("the lab has no BIND server")
    try:
        zones.start_primary(lab.lab, server, serial=1)
        lab.restart_resolver(server, config=zones.secondary_config(lab.lab, server), wait=True)
        lab.kill_anycastd(server)
        lab.start_anycastd(server, zone_config(lab, server))
        lab.anycastctl_ready(server)
        wait_until(lambda: zone_status(lab, server).get("kind") == "ok", 15, what="the zone check passing")
        assert "fresh.example. serial 1, the primary's 1" in str(zone_status(lab, server)["reason"])
        lab.wait_server(server, present=True, timeout=20)

        zones.block_transfers(lab.lab, server)
        zones.bump(lab.lab, server, serial=2)  # NOTIFY arrives; the IXFR cannot
        changed = time.monotonic()
        wait_until(lambda: "behind the primary's 2" in str(zone_status(lab, server).get("reason")), 5,
                   what="the secondary seen behind")  # fmt: skip
        assert server.name in lab.server_paths()  # behind, but for less than max_lag: still announced
        lab.wait_server(server, present=False, timeout=MAX_LAG + FALL * INTERVAL + 3)
        took = time.monotonic() - changed
        result = zone_status(lab, server)
        assert result["kind"] == "stale", result
        assert "fresh.example. serial 1, behind the primary's 2 for" in str(result["reason"]), result
        assert took > MAX_LAG, f"withdrawn {took:.2f} s after the change, before max_lag ({MAX_LAG} s)"
        print(f"stale secondary: out of the FIB {took:.2f} s after the primary changed (max_lag {MAX_LAG} s)")

        zones.block_transfers(lab.lab, server, on=False)  # the secondary's next retry (1 to 2 s) fetches serial 2
        try:
            lab.wait_server(server, present=True, timeout=15)
        except TimeoutError:
            print("not back: the zone check", zone_status(lab, server), lab.anycastctl(server, "status").stdout)
            print((lab.lab.workdir / server.name / "bind.log").read_text()[-3000:])
            raise
        assert "fresh.example. serial 2, the primary's 2" in str(zone_status(lab, server)["reason"])
        primary_log = (lab.lab.workdir / f"primary-{server.name}" / "named.log").read_text()
        served = [line for line in primary_log.splitlines() if "XFR ended" in line]
        assert "IXFR ended" in served[-1] and "AXFR-style" not in served[-1], served  # caught up incrementally
    finally:
        zones.stop_primary(lab.lab, server)
        lab.restart_resolver(server, wait=True)
        lab.kill_anycastd(server)
        lab.start_anycastd(server, lab.anycastd_config(server))
