#!/usr/bin/env python3
"""What anycastd costs on a server: CPU and memory at its default probe rate, in the lab.

With the lab healthy, samples /proc for every process of each server's
anycastd (anycastd itself, its ExaBGP, the ExaBGP helper) over a window and
reports CPU as a share of one core and RSS. Prints a table and writes it into
docs/benchmarks.md.

    python bench/resources.py [--seconds 60]
"""

from __future__ import annotations

import statistics
import sys
import time

from report import arguments, context, cpu_percent, publish, rss_mb

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab


def roles(lab: BgpLab) -> dict[str, list[int]]:
    """pid lists by role, over all servers."""
    out: dict[str, list[int]] = {"anycastd": [], "exabgp": [], "exabgp helper": []}
    for s in lab.servers:
        out["anycastd"].append(lab.lab.processes[daemons.anycastd_key(s)].pid)
        exabgp = lab.exabgp_pid(s)
        assert exabgp is not None
        out["exabgp"].append(exabgp)
        with open(f"/proc/{exabgp}/task/{exabgp}/children") as f:
            out["exabgp helper"] += [int(p) for p in f.read().split()]
    return out


def main() -> int:
    args = arguments(__doc__, "bench/resources.py", lambda p: p.add_argument("--seconds", type=float, default=60.0))
    if args is None:
        return 1
    with BgpLab() as lab:
        time.sleep(5)  # past start-up: measure the steady state
        pids = roles(lab)
        print(f"sampling for {args.seconds:g} s ...", flush=True)
        cpu = cpu_percent([p for ps in pids.values() for p in ps], args.seconds)
        rss = {p: rss_mb(p) for p in cpu}
    rows = [
        "| process (per server, n = 3 servers) | CPU, % of one core (mean / max) | RSS MB (mean / max) |",
        "|---|---:|---:|",
    ]
    totals_cpu = [0.0] * len(pids["anycastd"])
    totals_rss = [0.0] * len(pids["anycastd"])
    for role, ps in pids.items():
        c = [cpu[p] for p in ps]
        r = [rss[p] for p in ps]
        if role != "exabgp helper":
            for i in range(len(ps)):
                totals_cpu[i] += c[i]
                totals_rss[i] += r[i]
        rows.append(f"| {role} | {statistics.mean(c):.2f} / {max(c):.2f} | {statistics.mean(r):.1f} / {max(r):.1f} |")
    helper_cpu = [cpu[p] for p in pids["exabgp helper"]]
    helper_rss = [rss[p] for p in pids["exabgp helper"]]
    all_cpu = [t + h for t, h in zip(totals_cpu, helper_cpu, strict=True)]
    all_rss = [t + h for t, h in zip(totals_rss, helper_rss, strict=True)]
    together = (
        f"{statistics.mean(all_cpu):.2f} / {max(all_cpu):.2f} | {statistics.mean(all_rss):.1f} / {max(all_rss):.1f}"
    )
    rows.append(f"| all three together | {together} |")
    publish(
        "bench/resources.py",
        [
            "## Cost on the server: CPU and memory at the default probe rate",
            "",
            f"Command: `python bench/resources.py --seconds {args.seconds:g}` (as root; `make bench-sidecar` runs it).",
            context(),
            "One service, one check with the defaults (a probe every 0.2 s, each querying the admin address and",
            "both service addresses: 15 queries/s). CPU is utime + stime from /proc over the window, as a share",
            "of one core; RSS is VmRSS at the end. The lab's three servers share the machine's 2 cores with the",
            "router and Unbound.",
            "",
            "\n".join(rows),
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
