"""DoT and DoH checks against the real resolvers (BIND 9.18 and Unbound, as Debian 12 ships them): a server is
announced while its TLS listener answers, and leaves the router's FIB when that listener dies while port 53 still
answers, its kept connection notwithstanding; it comes back when the listener does."""

from __future__ import annotations

import json
import time

import pytest

from anycastd_lab import encrypted
from anycastd_lab.bgp import BgpLab
from anycastd_lab.daemons import dig
from anycastd_lab.topology import Server, wait_until

#: fall_hard x interval (a reset is a refused connection: a hard failure, 1 x 0.2 s), a confirming probe, and the
#: withdrawal's way to the router's kernel; the detection is measured in bench/, this is the bound the test holds.
WITHIN = 2.0


def last(lab: BgpLab, server: Server) -> dict[str, object]:
    reply = lab.anycastctl(server, "status", "--json")
    status = json.loads(reply.stdout)
    assert "services" in status, f"{reply.stdout} {reply.stderr}"
    check = status["services"][0]["checks"][0]
    return {"check_kind": check["kind"], "transport": check["transport"], **(check["last"] or {})}


def encrypted_config(lab: BgpLab, server: Server, transport: str) -> str:
    cert, _ = encrypted.certificate(lab.lab)
    tls = f"{{server_name: {encrypted.SERVER_NAME}, ca_file: {cert}}}"
    config = lab.anycastd_config(server).replace(
        "answer: healthy", f"answer: healthy\n        transport: {transport}\n        tls: {tls}"
    )
    assert f"transport: {transport}" in config
    return config


@pytest.mark.parametrize("transport", ["dot", "doh"])
@pytest.mark.parametrize("resolver", ["bind", "unbound"])
def test_a_dead_tls_listener_behind_a_live_port_53_leaves_the_fib(lab: BgpLab, resolver: str, transport: str) -> None:
    server = next((s for s in lab.servers if s.resolver == resolver), None)
    if server is None:
        pytest.skip(f"the lab has no {resolver} server")
    port = encrypted.DOT_PORT if transport == "dot" else encrypted.DOH_PORT
    try:
        lab.restart_resolver(server, config=encrypted.tls_resolver_config(lab.lab, server), wait=True)
        lab.kill_anycastd(server)
        lab.start_anycastd(server, encrypted_config(lab, server, transport))
        lab.anycastctl_ready(server)
        wait_until(lambda: last(lab, server).get("kind") == "ok", 15, what=f"the {transport} probe passing")
        assert (last(lab, server)["check_kind"], last(lab, server)["transport"]) == ("dns", transport)
        lab.wait_server(server, present=True, timeout=20)

        encrypted.refuse(lab.lab, server, port)  # the TLS listener is dead; port 53 is not
        started = time.monotonic()
        lab.wait_server(server, present=False, timeout=WITHIN)
        took = time.monotonic() - started
        assert dig(lab.lab, lab.lab.ns(server.name), server.v4) == server.name  # port 53 still answers
        result = last(lab, server)
        assert result["kind"] == "refused", result
        assert str(result["reason"]).startswith(f"{server.v4}: connection refused; "), result  # service addresses too
        print(f"{resolver} {transport}: the dead listener left the FIB in {took * 1000:.0f} ms")

        encrypted.refuse(lab.lab, server, port, on=False)
        lab.wait_server(server, present=True, timeout=10)
    finally:
        encrypted.refuse(lab.lab, server, port, on=False)
        lab.restart_resolver(server, wait=True)  # the lab's own configuration again
        lab.kill_anycastd(server)
        lab.start_anycastd(server, lab.anycastd_config(server))
