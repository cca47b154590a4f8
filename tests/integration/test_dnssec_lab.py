"""A DNSSEC check (`dnssec: true`) against a real validating Unbound: its server is announced while the
validator vouches for the answer, and leaves the router's FIB when validation breaks while the resolver still
answers (no trust anchor: no AD bit; a wrong one: SERVFAIL)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from anycastd_lab.bgp import BgpLab
from anycastd_lab.dnssec import SIGNED_QNAME, validating_unbound_config
from anycastd_lab.topology import Server, wait_until

#: fall x interval + timeout of the lab check (defaults: 3 x 0.2 + 0.15), plus Unbound's reload and the route's way.
WITHIN = 3.0


def reload_unbound(lab: BgpLab, server: Server, anchor: str) -> None:
    conf = lab.lab.workdir / server.name / "unbound.conf"
    conf.write_text(validating_unbound_config(lab.lab, server, anchor))
    lab.signal_resolver(server, signal.SIGHUP)


def last_reason(lab: BgpLab, server: Server) -> str:
    status = json.loads(lab.anycastctl(server, "status", "--json").stdout)
    last = status["services"][0]["checks"][0]["last"] or {}
    return f"{last.get('kind')}: {last.get('reason')}"


def test_a_resolver_whose_validation_breaks_leaves_the_fib(lab: BgpLab) -> None:
    server = next((s for s in lab.servers if s.resolver == "unbound"), None)
    if server is None:
        pytest.skip("the lab has no Unbound server")
    config = lab.anycastd_config(server).replace("qname: health.example.", f"qname: {SIGNED_QNAME}")
    config = config.replace("answer: healthy", "answer: healthy\n        dnssec: true")
    assert "dnssec: true" in config and SIGNED_QNAME in config
    try:
        lab.restart_resolver(server, config=validating_unbound_config(lab.lab, server, "right"), wait=True)
        lab.kill_anycastd(server)
        lab.start_anycastd(server, config)
        lab.wait_server(server, present=True, timeout=20)  # validated: announced

        reload_unbound(lab, server, "none")  # no trust anchor: insecure, answered without the AD bit
        lab.wait_server(server, present=False, timeout=WITHIN)
        wait_until(lambda: "dnssec:" in last_reason(lab, server), 3, what="a dnssec failure in status")
        assert "without the AD bit" in last_reason(lab, server)

        reload_unbound(lab, server, "right")
        lab.wait_server(server, present=True, timeout=20)

        reload_unbound(lab, server, "wrong")  # an anchor no key matches: bogus, SERVFAIL
        lab.wait_server(server, present=False, timeout=WITHIN)
        wait_until(lambda: "rcode SERVFAIL" in last_reason(lab, server), 3, what="SERVFAIL in status")
        time.sleep(0.5)
        assert server.name not in lab.server_paths()
    finally:
        lab.restart_resolver(server, wait=True)  # the lab's own configuration again
        lab.kill_anycastd(server)
        lab.start_anycastd(server, lab.anycastd_config(server))
