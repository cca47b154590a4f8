"""A DNSSEC check (`dnssec: true`) against a real validating Unbound: its server is announced while the
validator vouches for the answer (the AD bit), leaves the router's FIB when the zone's signatures expire while
the resolver still answers (bogus: SERVFAIL; made with unbound-control, which leaves Unbound's sockets open),
and is never announced on an answer the resolver did not validate (no AD bit)."""

from __future__ import annotations

import json
import time

import pytest

from anycastd_lab import dnssec
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import Server, wait_until

#: fall x interval + timeout of the lab check (defaults: 3 x 0.2 + 0.15), plus the route's way to the router.
WITHIN = 3.0


def last(lab: BgpLab, server: Server) -> str:
    """The kind and reason of the check's last probe, as anycastd's status says."""
    reply = lab.anycastctl(server, "status", "--json")
    status = json.loads(reply.stdout)
    assert "services" in status, f"{reply.stdout} {reply.stderr}"
    result = status["services"][0]["checks"][0]["last"] or {}
    return f"{result.get('kind')}: {result.get('reason')}"


def dnssec_config(lab: BgpLab, server: Server) -> str:
    """The lab's sidecar configuration, its check asking the signed name with ``dnssec: true``."""
    config = lab.anycastd_config(server).replace("qname: health.example.", f"qname: {dnssec.SIGNED_QNAME}")
    return config.replace("answer: healthy", "answer: healthy\n        dnssec: true")


def test_a_resolver_whose_validation_breaks_leaves_the_fib(lab: BgpLab) -> None:
    server = next((s for s in lab.servers if s.resolver == "unbound"), None)
    if server is None:
        pytest.skip("the lab has no Unbound server")
    config = dnssec_config(lab, server)
    assert "dnssec: true" in config and dnssec.SIGNED_QNAME in config
    try:
        lab.restart_resolver(server, config=dnssec.validating_unbound_config(lab.lab, server), wait=True)
        lab.kill_anycastd(server)
        lab.start_anycastd(server, config)
        lab.anycastctl_ready(server)
        wait_until(lambda: last(lab, server).startswith("ok:"), 10, what="the validated answer passing")
        lab.wait_server(server, present=True, timeout=20)

        dnssec.expire(lab.lab, server)  # bogus: SERVFAIL
        lab.wait_server(server, present=False, timeout=WITHIN)
        assert last(lab, server).startswith("rcode:") and "SERVFAIL" in last(lab, server)
        dnssec.heal(lab.lab, server)
        lab.wait_server(server, present=True, timeout=20)

        # the resolver's own local data is answered without validation: no AD bit, never announced
        lab.kill_anycastd(server)
        lab.wait_server(server, present=False, timeout=10)
        lab.start_anycastd(server, config.replace(dnssec.SIGNED_QNAME, "health.example."))
        lab.anycastctl_ready(server)
        wait_until(lambda: last(lab, server).startswith("dnssec:"), 10, what="a dnssec failure in status")
        assert "without the AD bit: the answer was not validated" in last(lab, server)
        time.sleep(1.0)  # several probe rounds: still failing, still out
        assert server.name not in lab.server_paths()
    finally:
        lab.restart_resolver(server, wait=True)  # the lab's own configuration again
        lab.kill_anycastd(server)
        lab.start_anycastd(server, lab.anycastd_config(server))


def test_a_resolver_with_the_wrong_trust_anchor_is_never_announced(lab: BgpLab) -> None:
    server = next((s for s in lab.servers if s.resolver == "unbound"), None)
    if server is None:
        pytest.skip("the lab has no Unbound server")
    config = dnssec_config(lab, server)
    wrong = dnssec.validating_unbound_config(lab.lab, server, anchor=dnssec.wrong_anchor(lab.lab))
    assert dnssec.wrong_anchor(lab.lab) in wrong
    try:
        lab.kill_anycastd(server)
        lab.wait_server(server, present=False, timeout=10)
        lab.restart_resolver(server, config=wrong, wait=True)  # port 53 answers: local data is fine
        lab.start_anycastd(server, config)
        lab.anycastctl_ready(server)
        wait_until(lambda: last(lab, server).startswith("rcode:"), 10, what="a SERVFAIL in status")
        assert "rcode SERVFAIL, expected NOERROR" in last(lab, server)
        time.sleep(1.0)  # several probe rounds: still failing, never announced
        assert server.name not in lab.server_paths()
    finally:
        lab.restart_resolver(server, wait=True)
        lab.kill_anycastd(server)
        lab.start_anycastd(server, lab.anycastd_config(server))
