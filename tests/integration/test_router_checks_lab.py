"""`anycastd router` with the new kinds of check, against real FRR and the real resolvers: a DoT check of each
server (each server's admin address filled in), and a command check that runs on the router. A server whose DoT
listener dies leaves the router's FIB while the others stay; the command's output is in status, per server."""

from __future__ import annotations

import json
from typing import Any

from anycastd_lab import daemons, encrypted
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import SERVICE_V4, wait_until


def router_config(lab: StaticLab) -> str:
    cert, _ = encrypted.certificate(lab.lab)
    checks = f"""    checks:
      - qname: health.example.
        qtype: TXT
        answer: healthy
        transport: dot
        tls: {{server_name: {encrypted.SERVER_NAME}, ca_file: {cert}}}
      - kind: command
        command: [dig, +short, +time=1, +tries=1, "@{{address}}", health.example., TXT]
        interval: 1
        timeout: 0.5
"""
    text = daemons.router_config(lab.lab)
    start = text.index("    checks:\n")
    end = text.index("    servers:")
    return text[:start] + checks + text[end:]


def servers_status(lab: StaticLab) -> dict[str, list[dict[str, Any]]]:
    reply = lab.anycastctl("status", "--json")
    status = json.loads(reply.stdout)
    assert "services" in status, f"{reply.stdout} {reply.stderr}"
    return {s["name"]: s["checks"] for s in status["services"][0]["servers"]}


def test_a_dot_check_and_a_command_on_the_router(router_lab: StaticLab) -> None:
    lab = router_lab
    s2 = lab.servers[1]
    try:
        for s in lab.servers:
            lab.restart_resolver(s, config=encrypted.tls_resolver_config(lab.lab, s), wait=True)
        lab.stop_anycastd()
        lab.start_anycastd(router_config(lab))
        lab.anycastctl_ready()
        try:
            lab.wait_paths(len(lab.servers), timeout=20)
        except TimeoutError:
            print("not passing:", json.dumps(servers_status(lab), indent=1)[:6000])
            raise

        def all_passing() -> bool:
            return all(all((c["last"] or {}).get("ok") for c in checks) for checks in servers_status(lab).values())

        try:
            wait_until(all_passing, 15, what="every server's DoT and command checks passing")
        except TimeoutError:
            print("not passing:", json.dumps(servers_status(lab), indent=1)[:3000])
            raise
        status = servers_status(lab)
        for s in lab.servers:
            dot, command = status[s.name]
            assert (dot["kind"], dot["transport"], dot["address"]) == ("dns", "dot", s.v4)
            assert (command["kind"], command["transport"]) == ("command", None)
            assert command["last"]["reason"] == 'dig: exit 0: "healthy"', command

        encrypted.refuse(lab.lab, s2, encrypted.DOT_PORT)
        lab.wait_server(s2, present=False, timeout=3)
        assert lab.paths(SERVICE_V4) == {s.v4 for s in lab.servers if s.name != s2.name}
        assert servers_status(lab)[s2.name][0]["last"]["kind"] == "refused"
        encrypted.refuse(lab.lab, s2, encrypted.DOT_PORT, on=False)
        lab.wait_server(s2, present=True, timeout=10)
    finally:
        encrypted.refuse(lab.lab, s2, encrypted.DOT_PORT, on=False)
        for s in lab.servers:
            lab.restart_resolver(s, wait=True)
        lab.stop_anycastd()
