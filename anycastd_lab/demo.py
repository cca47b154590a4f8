"""`make demo`: the sidecar lab, live, in a few steps a newcomer can follow.

Every number printed is measured in this run. The lab is torn down at the
end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Any

from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, run, wait_until


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


def route(lab: BgpLab, family: str, prefix: str) -> str:
    out = run("ip", "netns", "exec", lab.lab.router, "ip", family, "route", "show", prefix).stdout
    return "\n".join("   " + line for line in out.rstrip().splitlines()) or "   (no route)"


RATE = 1000  # queries/s from the client while things break


def distribution(lab: BgpLab, result: dict[str, Any]) -> None:
    answered: Counter[str] = Counter(result["answered"])
    total = sum(answered.values()) + result["lost"]
    for name in sorted({s.name for s in lab.servers} | set(answered)):
        n = answered.get(name, 0)
        say(f"   {name:>3}  {n:5d}  {'#' * round(40 * n / max(total, 1))}")
    say(f"   lost {result['lost']} of {total}")


Summary = list[tuple[str, str, str]]


def healthy(lab: BgpLab, address: str, summary: Summary) -> None:
    step("1. Three healthy servers: the router's ECMP routes (its kernel, via FRR/BGP)")
    say(route(lab, "-4", SERVICE_V4))
    say(route(lab, "-6", SERVICE_V6))
    say(f"   1000 queries from the client at {RATE}/s, each its own flow (new source port):")
    result = lab.client_result(lab.client(address, 1000, RATE))
    distribution(lab, result)
    summary.append(("three healthy servers", f"1000 queries over {len(result['answered'])}", str(result["lost"])))


def unplanned(lab: BgpLab, address: str, summary: Summary) -> None:
    victim = lab.servers[0]
    step(f"2. Unplanned: {victim.resolver_name} on {victim.name} is killed (SIGKILL) under {RATE} queries/s")
    load = lab.client(address, RATE * 4, RATE)
    time.sleep(1.0)
    lab.kill_resolver(victim)
    gone = lab.wait_server(victim, present=False, timeout=10)
    say(f"   {victim.name}'s path left the router's FIB {gone * 1000:.0f} ms after the kill")
    result = lab.client_result(load)
    distribution(lab, result)
    say("   (the queries lost are those the router still sent to the dead resolver before the path left)")
    summary.append((f"{victim.name}'s resolver killed", f"path gone in {gone * 1000:.0f} ms", str(result["lost"])))


def planned(lab: BgpLab, address: str, summary: Summary) -> None:
    drained = lab.servers[1]
    step(f"3. Planned: `anycastctl withdraw dns --wait` on {drained.name}, then its {drained.resolver_name} is stopped")
    say(
        f"   ({lab.servers[0].name} is still down from step 2: {drained.name} and {lab.servers[2].name} carry the load)"
    )
    load = lab.client(address, RATE * 5, RATE)
    time.sleep(1.0)
    t0 = time.monotonic()
    out = lab.anycastctl(drained, "withdraw", "dns", "--reason", "demo: planned maintenance", "--wait", "--json")
    if out.returncode != 0:
        raise RuntimeError(f"anycastctl withdraw failed: {out.stderr}")
    drain = json.loads(out.stdout)["drain"]
    say(
        f"   anycastctl returned after {time.monotonic() - t0:.2f} s: {drain['note']}, measured with "
        f"{drain['method']} ({drain['packets']} packets still arrived after the withdrawal)"
    )
    lab.kill_resolver(drained)
    say(f"   {drained.resolver_name} on {drained.name} stopped; the load goes on")
    result = lab.client_result(load)
    distribution(lab, result)
    summary.append(
        (f"{drained.name} drained, then stopped", f"--wait took {drain['waited']:.2f} s", str(result["lost"]))
    )


def restored(lab: BgpLab, summary: Summary) -> None:
    step("4. Everything restored: resolvers started, maintenance ended (anycastctl announce)")
    t0 = time.monotonic()
    lab.restore()
    say(f"   three paths again {time.monotonic() - t0:.1f} s later")
    say(route(lab, "-4", SERVICE_V4))
    summary.append(("restored", f"{len(lab.paths())} paths", "-"))


def everyone_fails(lab: BgpLab, address: str, summary: Summary) -> None:
    step("5. The same fault on every server at once: a bad health record pushed everywhere")
    say("   (each resolver reloads a health record that no longer matches; it answers everything else)")
    load = lab.client(address, RATE * 5, RATE)
    time.sleep(1.0)
    for s in lab.servers:
        lab.set_health_record(s, "sick")
    time.sleep(2.5)
    say("   every anycastd keeps its path, tagged GRACEFUL_SHUTDOWN (65535:0); the router's FIB:")
    say(route(lab, "-4", SERVICE_V4))
    result = lab.client_result(load)
    distribution(lab, result)
    summary.append(("every server failing at once", f"{len(lab.paths())} paths kept", str(result["lost"])))
    s2 = lab.servers[1]
    lab.set_health_record(s2, "healthy")
    t0 = time.monotonic()
    wait_until(lambda: lab.server_paths() == {s2.name}, 10, interval=0.002, what=f"{s2.name} alone in the FIB")
    took = time.monotonic() - t0
    say(f"   {s2.name} recovers: it alone is in the router's FIB {took * 1000:.0f} ms later")
    result = lab.client_result(lab.client(address, 300, RATE))
    distribution(lab, result)
    summary.append((f"{s2.name} recovers first", f"alone: {sorted(result['answered'])}", str(result["lost"])))
    lab.restore()


def main() -> int:
    if os.geteuid() != 0:
        say("make demo needs root: it creates network namespaces and runs FRR, BIND, Unbound and ExaBGP in them")
        return 1
    started = time.monotonic()
    summary: Summary = []
    step(f"Building the lab from containerlab/{BgpLab.TOPOLOGY.name}: FRR router, DNS servers, client")
    with BgpLab() as lab:
        kinds = ", ".join(f"{s.name} {s.resolver_name}" for s in lab.servers)
        say(f"   servers: {kinds}; each with anycastd and ExaBGP")
        say(f"   up in {time.monotonic() - started:.1f} s; every server announces {SERVICE_V4} and {SERVICE_V6}")
        address = SERVICE_V4.split("/")[0]
        healthy(lab, address, summary)
        unplanned(lab, address, summary)
        planned(lab, address, summary)
        restored(lab, summary)
        everyone_fails(lab, address, summary)
        step("Summary (every number measured in this run)")
        rows = [("step", "measured", "lost"), *summary]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            say("   " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        step("Tearing down")
        tag = lab.lab.tag
    left = [line for line in run("ip", "netns", "list").stdout.splitlines() if line.startswith(f"{tag}-")]
    say(f"   done in {time.monotonic() - started:.1f} s; lab namespaces left: {len(left)}")
    return 0 if not left else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("\ninterrupted; the lab was torn down")
        sys.exit(130)
