"""A command check (`kind: command`) in the sidecar on a real server: the operator's program decides, its first
line is in status, and a program that hangs fails its probe without stalling the DNS check beside it."""

from __future__ import annotations

import json
import time
from typing import Any

from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import Server, wait_until

#: The hanging program's argument: no other process on the machine sleeps exactly this long.
HANG = "60.3141"


def checks(lab: BgpLab, server: Server) -> list[dict[str, Any]]:
    reply = lab.anycastctl(server, "status", "--json")
    status = json.loads(reply.stdout)
    assert "services" in status, f"{reply.stdout} {reply.stderr}"
    return list(status["services"][0]["checks"])


def command_config(lab: BgpLab, server: Server, *argv: str, timeout: float = 0.3) -> str:
    words = ", ".join(json.dumps(w) for w in argv)
    extra = f"""
      - kind: command
        command: [{words}]
        interval: 0.5
        timeout: {timeout}
        fall: 2
"""
    return lab.anycastd_config(server).rstrip("\n") + extra


def test_the_operators_program_decides_and_a_hanging_one_stalls_nothing(lab: BgpLab) -> None:
    server = lab.servers[0]
    flag = lab.lab.workdir / server.name / "in-service"
    flag.write_text("ready for traffic\n")
    flag.chmod(0o644)
    try:
        lab.kill_anycastd(server)
        lab.start_anycastd(server, command_config(lab, server, "cat", str(flag)))
        lab.anycastctl_ready(server)
        wait_until(lambda: (checks(lab, server)[1]["last"] or {}).get("ok"), 10, what="the command passing")
        assert checks(lab, server)[1]["last"]["reason"] == "cat: exit 0: ready for traffic"
        lab.wait_server(server, present=True, timeout=20)

        flag.unlink()  # the operator's own signal: out of service
        lab.wait_server(server, present=False, timeout=5)
        last = checks(lab, server)[1]["last"]
        assert last["kind"] == "exit" and "cat: exit 1: cat: " in last["reason"], last
        flag.write_text("back\n")
        lab.wait_server(server, present=True, timeout=10)

        # a program that never exits: each probe is killed at its timeout, and the DNS check goes on
        lab.kill_anycastd(server)
        lab.wait_server(server, present=False, timeout=10)
        lab.start_anycastd(server, command_config(lab, server, "sleep", HANG, timeout=0.3))
        lab.anycastctl_ready(server)
        wait_until(lambda: (checks(lab, server)[1]["last"] or {}).get("kind") == "timeout", 10, what="a timeout")
        before = checks(lab, server)[0]["probes"]
        time.sleep(1.0)
        dns, command = checks(lab, server)
        assert int(dns["probes"]) >= int(before) + 3, (before, dns)
        assert command["last"]["reason"] == "sleep: no exit within 300 ms (timeout); killed"
        assert server.name not in lab.server_paths()
        sleeping = lab.lab.exec(lab.lab.ns(server.name), "pgrep", "-c", "-f", f"^sleep {HANG}$", check=False)
        assert sleeping.stdout.strip() in ("0", "1"), sleeping.stdout  # at most the probe in flight: none left
    finally:
        lab.kill_anycastd(server)
        lab.start_anycastd(server, lab.anycastd_config(server))
