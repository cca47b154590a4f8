#!/usr/bin/env python3
"""Many addresses on one server: start, failure and cost at 1 to 1,000 addresses, before and after a change.

On the sidecar lab's BIND server (s1; BIND listens on every address), anycastd is
started with N service addresses, in two shapes:

* *services*: N services of one prefix each, every one with the lab's check (the same
  check, field for field: a DNS query to the admin address, and to the service's own
  address);
* *prefixes*: one service of N prefixes, with that check.

The addresses are 203.0.113.54 upwards (at most 200 of them), then 2001:db8:53::/64
host routes. They are bound, and BIND answers on them, before anycastd starts, as on a
server whose anycastd restarts (BIND is reloaded for that: a burst of new addresses
overflows its routing socket and it stops scanning; how soon BIND picks up new addresses
is BIND's time, not anycastd's). For each N and shape it measures, from the router's
kernel FIB (one netlink dump per family, polled every 10 ms):

* start -> all N in the FIB via s1 (anycastd started until the last one is there: its
  start, ExaBGP's, ``rise`` probes and BGP);
* resolver killed (SIGKILL) -> all N gone;
* resolver restarted -> all N back (includes BIND's start);
* CPU of anycastd, its ExaBGP and the ExaBGP helper over ``--cpu-seconds`` at rest, and
  their RSS;
* the wall time of `anycastctl status --json`, a metrics scrape, a reload of the unchanged
  file and `anycastd frr-policy` (each with its program's start-up).

``--base REV`` checks REV out into a git worktree and measures it and this tree
alternately (``--rounds`` each), each tree with PYTHONPATH set to itself, so that the
lab and the daemons are that tree's; the lab API used here is the same in both.

    python bench/scale.py [--sizes 1,10,100,1000] [--base REV] [--rounds 1] [--cpu-seconds 20]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import alternate, before_after_options, context, cpu_percent, publish, rss_mb

HERE = Path(__file__).resolve()
SHAPES = ("services", "prefixes")
POLL = 0.010
#: How long one wait may take before the measure is reported missed.
LIMIT = 60.0


def addresses(n: int) -> list[str]:
    v4 = [f"203.0.113.{54 + i}/32" for i in range(min(n, 200))]
    v6 = [f"{ipaddress.ip_address('2001:db8:53::') + i + 1}/128" for i in range(n - len(v4))]
    return v4 + v6


def config(base: str, check: str, prefixes: list[str], shape: str) -> str:
    """The lab's configuration of s1 with its services replaced by ``prefixes`` in ``shape``."""
    head = base.split("\nservices:\n", 1)[0] + "\nservices:\n"
    if shape == "prefixes":
        return head + f"  many:\n    prefixes: [{', '.join(prefixes)}]\n    interface: lo\n    checks:\n{check}"
    return head + "".join(
        f"  s{i}:\n    prefixes: [{p}]\n    interface: lo\n    checks:\n{check}" for i, p in enumerate(prefixes)
    )


def held(ipr: Any, prefixes: frozenset[str], gateways: frozenset[str]) -> int:
    """How many of ``prefixes`` the router's kernel forwards via one of ``gateways``."""
    count = 0
    for family in (2, 10):
        for route in ipr.route("dump", family=family, table=254):
            dst = route.get("dst")
            if dst is None or f"{dst}/{route['dst_len']}" not in prefixes:
                continue
            hops = [h.get("gateway") for h in route.get("multipath") or []] or [route.get("gateway")]
            count += any(h in gateways for h in hops)
    return count


def until(ipr: Any, prefixes: frozenset[str], gateways: frozenset[str], count: int, since: float) -> float | None:
    while time.monotonic() - since < LIMIT:
        if held(ipr, prefixes, gateways) == count:
            return time.monotonic() - since
        time.sleep(POLL)
    return None


def listening(lab: Any, s1: Any, prefixes: list[str]) -> None:
    """Bind ``prefixes`` on s1's lo and wait until BIND answers on each family's last one: a server whose
    anycastd restarts has them bound and served already, and how soon BIND picks up a new address (a few
    hundred a second, here) is BIND's, not anycastd's."""
    from anycastd_lab import daemons  # noqa: PLC0415

    with tempfile.NamedTemporaryFile("w", suffix=".ip") as batch:
        for p in prefixes:
            batch.write(f"address add {p} dev lo{' nodad' if ':' in p else ''}\n")
        batch.flush()
        lab.lab.exec(lab.lab.ns(s1.name), "ip", "-force", "-batch", batch.name, check=False)
    # a burst of new addresses overflows BIND's routing socket, and it stops scanning ("automatic interface
    # scanning terminated: not enough free resources"); a reload scans every interface again
    lab.signal_resolver(s1, signal.SIGHUP)
    last = [p.split("/")[0] for p in prefixes if ":" not in p][-1:] + [p.split("/")[0] for p in prefixes if ":" in p][
        -1:
    ]
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        if all(daemons.dig(lab.lab, lab.lab.ns(s1.name), a) == s1.name for a in last):
            return
        time.sleep(0.2)
    raise RuntimeError(f"BIND on {s1.name} does not answer on {', '.join(last)}")


def measure(sizes: list[int], cpu_window: float) -> dict[str, Any]:
    """This tree's figures (run in a child whose PYTHONPATH is the tree)."""
    from pyroute2 import NetNS  # noqa: PLC0415 (the tree's own environment)

    from anycastd_lab import daemons  # noqa: PLC0415
    from anycastd_lab.bgp import BgpLab  # noqa: PLC0415

    out: dict[str, Any] = {}
    with BgpLab() as lab:
        s1 = lab.servers[0]
        assert s1.resolver == "bind", s1
        base = daemons.anycastd_config(lab.lab, s1)
        check = base.split("    checks:\n", 1)[1]
        gateways = frozenset({s1.v4, s1.v6})
        # the router takes only the service's own prefixes from each server, and at most 16 (frr/bgp/frr.conf):
        # these too from s1, and up to 2,000
        lab.vtysh_config(
            "ip prefix-list FROM-s1-V4 seq 20 permit 203.0.113.0/24 le 32\n"
            "ipv6 prefix-list FROM-s1-V6 seq 20 permit 2001:db8:53::/64 le 128\n"
            "router bgp 65000\n"
            "address-family ipv4 unicast\n"
            "neighbor DNS4 maximum-prefix 2000 restart 1\n"
            "exit-address-family\n"
            "address-family ipv6 unicast\n"
            "neighbor DNS6 maximum-prefix 2000 restart 1"
        )
        with NetNS(lab.lab.router) as ipr:
            for n in sizes:
                for shape in SHAPES:
                    if n == 1 and shape == "prefixes":
                        continue  # the same as one service
                    prefixes = addresses(n)
                    wanted = frozenset(prefixes)
                    lab.kill_anycastd(s1)
                    until(ipr, wanted, gateways, 0, time.monotonic())
                    listening(lab, s1, prefixes)
                    print(f"  {n} addresses, {shape} ...", flush=True)
                    row: dict[str, Any] = {}
                    started = time.monotonic()
                    lab.start_anycastd(s1, config(base, check, prefixes, shape))
                    row["start"] = until(ipr, wanted, gateways, n, started)
                    time.sleep(3)
                    pids = {"anycastd": lab.lab.processes[daemons.anycastd_key(s1)].pid}
                    exabgp = lab.exabgp_pid(s1)
                    if exabgp is not None:
                        pids["exabgp"] = exabgp
                        with open(f"/proc/{exabgp}/task/{exabgp}/children") as f:
                            children = f.read().split()
                        if children:
                            pids["helper"] = int(children[0])
                    cpu = cpu_percent(pids.values(), cpu_window)
                    row["cpu"] = {k: cpu[p] for k, p in pids.items()}
                    row["rss"] = {k: rss_mb(p) for k, p in pids.items()}
                    row.update(operations(lab, s1))
                    at = time.monotonic()
                    lab.kill_resolver(s1)
                    row["killed"] = until(ipr, wanted, gateways, 0, at)
                    at = time.monotonic()
                    lab.start_resolver(s1, wait=False)
                    row["back"] = until(ipr, wanted, gateways, n, at)
                    out[f"{n} {shape}"] = row
        lab.kill_anycastd(s1)
    return out


def operations(lab: Any, s1: Any) -> dict[str, float | None]:
    """Wall time of what an operator does at this size: `anycastctl status --json`, a metrics scrape, a reload
    of the unchanged file (SIGHUP until "reloaded" is logged) and `anycastd frr-policy` on the file. Each
    includes starting its program (the 1-address row is that floor)."""
    from anycastd_lab import daemons  # noqa: PLC0415

    out: dict[str, float | None] = {}
    t = time.monotonic()
    lab.anycastctl(s1, "status", "--json")
    out["status"] = time.monotonic() - t
    t = time.monotonic()
    lab.metrics(s1)
    out["metrics"] = time.monotonic() - t
    path, _, _ = daemons.anycastd_paths(lab.lab, s1)
    offset = lab.log_size(s1)
    t = time.monotonic()
    lab.signal_anycastd(s1, signal.SIGHUP)
    out["reload"] = None
    while time.monotonic() - t < LIMIT:
        if "reloaded" in lab.log_since(s1, offset):
            out["reload"] = time.monotonic() - t
            break
        time.sleep(0.005)
    t = time.monotonic()
    subprocess.run(daemons.anycastd_command("frr-policy", f"s1={path}"), capture_output=True, check=True)
    out["frr-policy"] = time.monotonic() - t
    return out


def ms(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    text = f"{statistics.median(got) * 1000:,.0f}" if got else "-"
    return text + (f" ({missed} missed)" if missed else "")


def table(runs: dict[str, list[dict[str, Any]]], trees: list[str]) -> list[str]:
    head = "| addresses | shape | measure | " + " | ".join(trees) + " |"
    rows = [head, "|---:|---|---|" + "---:|" * len(trees)]
    keys = list(runs[trees[-1]][0])
    for key in keys:
        n, shape = key.split()
        cells: dict[str, list[str]] = {}
        for tree in trees:
            got = [run[key] for run in runs[tree] if key in run]
            cells.setdefault("start -> all in the FIB, ms", []).append(ms([g["start"] for g in got]))
            cells.setdefault("resolver killed -> all gone, ms", []).append(ms([g["killed"] for g in got]))
            cells.setdefault("restarted -> all back, ms", []).append(ms([g["back"] for g in got]))
            for role in ("anycastd", "exabgp", "helper"):
                values = [g["cpu"][role] for g in got if role in g["cpu"]]
                text = f"{statistics.mean(values):.2f}" if values else "-"
                cells.setdefault(f"CPU at rest, {role}, % of a core", []).append(text)
            totals = [sum(g["cpu"].values()) for g in got]
            cells.setdefault("CPU at rest, all three, % of a core", []).append(
                f"**{statistics.mean(totals):.2f}**" if totals else "-"
            )
            for op, label in (
                ("status", "`anycastctl status --json`, ms"),
                ("metrics", "metrics scrape, ms"),
                ("reload", "reload of the same file (SIGHUP until logged), ms"),
                ("frr-policy", "`anycastd frr-policy`, ms"),
            ):
                cells.setdefault(label, []).append(ms([g.get(op) for g in got]))
            rss = [g["rss"]["anycastd"] for g in got]
            cells.setdefault("RSS anycastd / ExaBGP, MB", []).append(
                f"{statistics.mean(rss):.1f} / {statistics.mean(g['rss'].get('exabgp', 0.0) for g in got):.1f}"
                if rss
                else "-"
            )
        for measure_name, values in cells.items():
            rows.append(f"| {int(n):,} | {shape} | {measure_name} | " + " | ".join(values) + " |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100,1000", help="numbers of addresses (default 1,10,100,1000)")
    before_after_options(parser, rounds=1)
    parser.add_argument("--cpu-seconds", type=float, default=20.0, help="the CPU sample (default 20 s)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(sizes, args.cpu_seconds)))
        return 0
    if os.geteuid() != 0:
        print("bench/scale.py needs root (network namespaces)", file=sys.stderr)
        return 1
    argv = ["--sizes", args.sizes, "--cpu-seconds", str(args.cpu_seconds)]
    names, runs = alternate(HERE, argv, args.base, args.rounds)
    command = f"python bench/scale.py --sizes {args.sizes} --rounds {args.rounds} --cpu-seconds {args.cpu_seconds:g}"
    if args.base:
        command += f" --base {args.base}"
    publish(
        "bench/scale.py",
        [
            "## Many addresses on one server (`bench/scale.py`)",
            "",
            f"Command: `{command}` (as root).",
            context(),
            "s1 (BIND, listening on every address) runs anycastd with N addresses: *services* is N services of one "
            "prefix each, every one with the lab's check; *prefixes* is one service of N prefixes. Times are from the "
            "event until the router's kernel FIB holds all N via s1 (or none), one netlink dump per family every "
            f"10 ms; medians of {args.rounds} lab(s) per tree, each tree alternating with the other. CPU is utime + "
            f"stime over {args.cpu_seconds:g} s at rest (no fault, no client traffic).",
            "",
            "\n".join(table(runs, names)),
        ],
        not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
