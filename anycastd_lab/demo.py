"""`make demo`: the dual-homed POP, live, in a few steps a newcomer can follow.

containerlab/anycast-pop.clab.yml: an edge router e1 with the client behind it, two ToRs r1
and r2, three servers each linked to both ToRs, anycastd and bfdd on each (BFD 100 ms x 3,
and `return_path`: the servers' replies follow their live sessions).

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

from anycastd_lab.pop import PopLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, run, wait_until


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


def route(lab: PopLab, family: str, prefix: str, router: str | None = None) -> str:
    ns = lab.lab.ns(router) if router else lab.lab.router
    out = run("ip", "netns", "exec", ns, "ip", family, "route", "show", prefix).stdout
    return "\n".join("   " + line for line in out.rstrip().splitlines()) or "   (no route)"


RATE = 1000  # queries/s from the client while things break


def distribution(lab: PopLab, result: dict[str, Any]) -> None:
    answered: Counter[str] = Counter(result["answered"])
    total = sum(answered.values()) + result["lost"]
    for name in sorted({s.name for s in lab.servers} | set(answered)):
        n = answered.get(name, 0)
        say(f"   {name:>3}  {n:5d}  {'#' * round(40 * n / max(total, 1))}")
    say(f"   lost {result['lost']} of {total}")


Summary = list[tuple[str, str, str]]


def healthy(lab: PopLab, address: str, summary: Summary) -> None:
    step("1. Three healthy servers behind two ToRs: the ECMP routes in the routers' kernels (FRR, BGP, BFD)")
    say("   e1, the edge, spreads over both ToRs:")
    say(route(lab, "-4", SERVICE_V4))
    say(route(lab, "-6", SERVICE_V6))
    say("   r1, a ToR, over the three servers (r2 alike):")
    say(route(lab, "-4", SERVICE_V4, "r1"))
    say(f"   1000 queries from the client at {RATE}/s, each its own flow (new source port):")
    result = lab.client_result(lab.client(address, 1000, RATE))
    distribution(lab, result)
    summary.append(("three healthy servers", f"1000 queries over {len(result['answered'])}", str(result["lost"])))


def unplanned(lab: PopLab, address: str, summary: Summary) -> None:
    victim = lab.servers[0]
    step(f"2. Unplanned: {victim.resolver_name} on {victim.name} is killed (SIGKILL) under {RATE} queries/s")
    load = lab.client(address, RATE * 4, RATE)
    time.sleep(1.0)
    lab.kill_resolver(victim)
    gone = lab.wait_server(victim, present=False, timeout=10)
    say(f"   {victim.name}'s path left both ToRs' FIBs {gone * 1000:.0f} ms after the kill")
    result = lab.client_result(load)
    distribution(lab, result)
    say("   (the queries lost are those the router still sent to the dead resolver before the path left)")
    summary.append((f"{victim.name}'s resolver killed", f"path gone in {gone * 1000:.0f} ms", str(result["lost"])))


def dead_host(lab: PopLab, address: str, summary: Summary) -> None:
    victim = lab.servers[2]
    step(f"3. A whole server dies: {victim.name} loses power (every frame it sends is dropped; nothing withdraws)")
    load = lab.client(address, RATE * 4, RATE)
    time.sleep(1.0)
    lab.blackhole(victim)
    gone = lab.wait_server(victim, present=False, timeout=10)
    say(f"   BFD (3 x 100 ms) took {victim.name} out of both ToRs' FIBs {gone * 1000:.0f} ms after the power cut")
    say("   (without BFD, the BGP hold timer: 3 s; docs/benchmarks.md, bench/bfd.py)")
    result = lab.client_result(load)
    distribution(lab, result)
    summary.append(
        (f"{victim.name} dies whole (power)", f"out of both ToRs in {gone * 1000:.0f} ms", str(result["lost"]))
    )
    lab.blackhole(victim, on=False)
    lab.wait_server(victim, present=True, timeout=30)


def dead_tor(lab: PopLab, address: str, summary: Summary) -> None:
    step("4. A ToR dies: r1 loses power")
    load = lab.client(address, RATE * 4, RATE)
    time.sleep(1.0)
    t0 = time.monotonic()
    lab.kill_tor("r1")
    wait_until(lambda: lab.edge_paths() == {"r2"}, 10, interval=0.002, what="e1 leaving r1")
    edge = time.monotonic() - t0
    wait_until(lambda: all(len(lab.client_route(s)) == 1 for s in lab.servers), 10, interval=0.005, what="return paths")
    back = time.monotonic() - t0
    say(f"   e1 sends everything to r2 {edge * 1000:.0f} ms after the power cut (BFD with the ToRs);")
    say(f"   every server replies via r2 only {back * 1000:.0f} ms after it (anycastd's return_path, from BFD)")
    result = lab.client_result(load)
    distribution(lab, result)
    summary.append(("r1 (a ToR) dies", f"edge moved in {edge * 1000:.0f} ms", str(result["lost"])))
    lab.kill_tor("r1", on=False)
    lab.ensure_frr()
    wait_until(lambda: lab.edge_paths() == {"r1", "r2"}, 30, what="r1 back at e1")


def planned(lab: PopLab, address: str, summary: Summary) -> None:
    drained = lab.servers[1]
    step(f"5. Planned: `anycastctl withdraw dns --wait` on {drained.name}, then its {drained.resolver_name} is stopped")
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


def restored(lab: PopLab, summary: Summary) -> None:
    step("6. Everything restored: resolvers started, maintenance ended (anycastctl announce)")
    t0 = time.monotonic()
    lab.restore()
    say(f"   every path again {time.monotonic() - t0:.1f} s later: three servers at each ToR, both ToRs at e1")
    say(route(lab, "-4", SERVICE_V4, "r1"))
    summary.append(("restored", f"{len(lab.server_paths())} servers", "-"))


def everyone_fails(lab: PopLab, address: str, summary: Summary) -> None:
    step("7. The same fault on every server at once: a bad health record pushed everywhere")
    say("   (each resolver reloads a health record that no longer matches; it answers everything else)")
    load = lab.client(address, RATE * 5, RATE)
    time.sleep(1.0)
    for s in lab.servers:
        lab.set_health_record(s, "sick")
    time.sleep(2.5)
    say("   every anycastd keeps its path, tagged GRACEFUL_SHUTDOWN (65535:0); r1's FIB:")
    say(route(lab, "-4", SERVICE_V4, "r1"))
    result = lab.client_result(load)
    distribution(lab, result)
    summary.append(("every server failing at once", f"{len(lab.server_paths())} servers kept", str(result["lost"])))
    s2 = lab.servers[1]
    lab.set_health_record(s2, "healthy")
    t0 = time.monotonic()
    wait_until(lambda: lab.server_paths() == {s2.name}, 10, interval=0.002, what=f"{s2.name} alone in the FIBs")
    took = time.monotonic() - t0
    say(f"   {s2.name} recovers: it alone is in the ToRs' FIBs {took * 1000:.0f} ms later")
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
    step(f"Building the POP from containerlab/{PopLab.TOPOLOGY.name}: edge e1, ToRs r1 and r2, servers, client")
    with PopLab(return_path=True) as lab:
        lab.restore()  # and every BFD session up
        kinds = ", ".join(f"{s.name} {s.resolver_name}" for s in lab.servers)
        say(f"   servers: {kinds}; each linked to both ToRs, with anycastd, ExaBGP and bfdd")
        say(f"   up in {time.monotonic() - started:.1f} s; every server announces {SERVICE_V4} and {SERVICE_V6}")
        address = SERVICE_V4.split("/")[0]
        healthy(lab, address, summary)
        unplanned(lab, address, summary)
        dead_host(lab, address, summary)
        dead_tor(lab, address, summary)
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
