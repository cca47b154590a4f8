"""`make demo`: the sidecar lab, live, in a few steps a newcomer can follow.

Every number printed is measured in this run. The lab is torn down at the
end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

from anycastd.lab.bgp import BgpLab
from anycastd.lab.topology import SERVICE_V4, SERVICE_V6, run


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


def route(lab: BgpLab, family: str, prefix: str) -> str:
    out = run("ip", "netns", "exec", lab.lab.router, "ip", family, "route", "show", prefix).stdout
    return "\n".join("   " + line for line in out.rstrip().splitlines()) or "   (no route)"


def spread(lab: BgpLab, address: str, count: int) -> None:
    result = lab.client_result(lab.client(address, count, timeline=True))
    who = [name or "--" for _, name in result["timeline"]]
    for row in range(0, len(who), 20):
        say("   " + " ".join(f"{name:>2}" for name in who[row : row + 20]))
    answered: Counter[str] = Counter(result["answered"])
    width = 40
    for name in sorted({s.name for s in lab.servers} | set(answered)):
        n = answered.get(name, 0)
        bar = "#" * round(width * n / count)
        say(f"   {name:>3}  {n:4d}  {bar}")
    say(f"   lost {result['lost']} of {count}")


def main() -> int:
    if os.geteuid() != 0:
        say("make demo needs root: it creates network namespaces and runs FRR, Unbound and ExaBGP in them")
        return 1
    started = time.monotonic()
    step("Building the lab: FRR router, 3 DNS servers (Unbound + anycastd + ExaBGP), 1 client")
    with BgpLab() as lab:
        say(f"   up in {time.monotonic() - started:.1f} s; every server announces {SERVICE_V4} and {SERVICE_V6}")

        step("1. The router's ECMP routes to the service address (its kernel, via FRR/BGP)")
        say(route(lab, "-4", SERVICE_V4))
        say(route(lab, "-6", SERVICE_V6))

        step("   60 queries from the client, each its own flow (new source port): who answered each")
        spread(lab, SERVICE_V4.split("/")[0], 60)

        victim = lab.servers[0]
        step(f"2. Killing Unbound on {victim.name} (SIGKILL)")
        lab.kill_resolver(victim)
        gone = lab.wait_server(victim, present=False, timeout=10)
        say(f"   {victim.name}'s path left the router's FIB {gone * 1000:.0f} ms after the kill")
        say(route(lab, "-4", SERVICE_V4))
        spread(lab, SERVICE_V4.split("/")[0], 60)

        step(f"3. Starting Unbound on {victim.name} again")
        t0 = time.monotonic()
        lab.start_resolver(victim, wait=False)
        lab.wait_server(victim, present=True, timeout=10)
        say(f"   back in the FIB {(time.monotonic() - t0) * 1000:.0f} ms after the restart (rise = 3 probes)")
        say(route(lab, "-4", SERVICE_V4))

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
