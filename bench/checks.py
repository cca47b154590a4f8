#!/usr/bin/env python3
"""Checks that know DNS (issue 30): what each kind of check costs, and that none flaps under probe loss.

Two parts, on the BGP lab (BIND on s1, Unbound on s2 and s3), each resolver serving DoT and DoH as well
(anycastd_lab/encrypted.py) and s1 also a secondary of a hidden primary (anycastd_lab/zones.py):

* **cost**: s1's anycastd is run with one service whose one check is of the kind and transport of each row
  (a DNS check asks the admin address and both service addresses), and the CPU of anycastd's process alone
  is read from /proc over ``--cpu-seconds``; ExaBGP and the resolver are not counted. Rows alternate
  ``--rounds`` times, so that a machine that gets busier weighs on all of them alike.
* **loss**: every server runs the checks below at their defaults for ``--loss-seconds`` while ``--loss`` %
  of the packets the checks use is dropped on each server's input hook (DNS on port 53 both ways, DoT and
  DoH segments both ways, the primary's answers): the router's FIB is watched every 10 ms, and each time a
  server's path leaves it is a false withdrawal (nothing failed but packets). Status gives each check's
  probes and failed probes, which shows the loss reached them.

    python bench/checks.py [--cpu-seconds 30] [--rounds 2] [--loss 5] [--loss-seconds 600]
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from report import arguments, context, cpu_percent, publish

from anycastd_lab import daemons, encrypted, zones
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import Server, wait_until

LOSS_TABLE = "acd_bench_loss"


def anycastd_pid(lab: BgpLab, server: Server) -> int:
    return lab.lab.processes[daemons.anycastd_key(server)].pid


def check_yaml(lab: BgpLab, server: Server, kind: str, interval: float | None = None) -> str:
    """The YAML of one check of ``kind`` on ``server`` (interval: the kind's default unless given)."""
    cert, _ = encrypted.certificate(lab.lab)
    every = f"\n        interval: {interval}\n        timeout: {interval * 0.75:g}" if interval else ""
    dns = f"      - address: {server.v4}\n        qname: health.example.\n        qtype: TXT\n        answer: healthy"
    if kind in ("udp", "tcp", "dot", "doh"):
        tls = (
            f"\n        tls: {{server_name: {encrypted.SERVER_NAME}, ca_file: {cert}}}"
            if kind in ("dot", "doh")
            else ""
        )
        return f"{dns}\n        transport: {kind}{tls}{every}\n"
    if kind == "zone":
        primary = f"        primary: {server.router_v4}\n        primary_port: {zones.PRIMARY_PORT}"
        return f"      - kind: zone\n        address: {server.v4}\n        zones: [{zones.ZONE}]\n{primary}{every}\n"
    flag = lab.lab.workdir / server.name / "in-service"
    return f"      - kind: command\n        command: [cat, {flag}]{every}\n"


def with_checks(lab: BgpLab, server: Server, checks: str) -> str:
    config = lab.anycastd_config(server)
    start = config.index("    checks:\n") + len("    checks:\n")
    return config[:start] + checks


def status_checks(lab: BgpLab, server: Server) -> list[dict[str, Any]]:
    status = json.loads(lab.anycastctl(server, "status", "--json").stdout)
    return list(status["services"][0]["checks"])


def prepare(lab: BgpLab) -> None:
    """Every resolver serving DoT and DoH too; BIND also a secondary of its hidden primary; the command's file."""
    for s in lab.servers:
        config = encrypted.tls_resolver_config(lab.lab, s)
        if s.resolver == "bind":
            zones.start_primary(lab.lab, s)
            config += zones.secondary_zone(s)
        lab.restart_resolver(s, config=config, wait=True)
        flag = lab.lab.workdir / s.name / "in-service"
        flag.write_text("in service\n")
        flag.chmod(0o644)


def run_with(lab: BgpLab, server: Server, checks: str) -> None:
    lab.kill_anycastd(server)
    lab.start_anycastd(server, with_checks(lab, server, checks))
    lab.anycastctl_ready(server)
    wait_until(lambda: all((c["last"] or {}).get("ok") for c in status_checks(lab, server)), 20,
               what=f"{server.name}'s checks passing")  # fmt: skip


COST_ROWS: list[tuple[str, str, float | None]] = [
    ("DNS over UDP (default: every 0.2 s)", "udp", None),
    ("DNS over TCP, every 0.2 s", "tcp", None),
    ("DoT (default: every 1 s)", "dot", None),
    ("DoT, every 0.2 s", "dot", 0.2),
    ("DoH (default: every 1 s)", "doh", None),
    ("DoH, every 0.2 s", "doh", 0.2),
    ("zone, 1 zone and its primary (default: every 1 s)", "zone", None),
    ("command `cat FILE` (default: every 1 s)", "command", None),
]


def cost(lab: BgpLab, seconds: float, rounds: int) -> dict[str, list[float]]:
    s1 = next(s for s in lab.servers if s.resolver == "bind")
    out: dict[str, list[float]] = {label: [] for label, _, _ in COST_ROWS}
    for n in range(rounds):
        for label, kind, interval in COST_ROWS:
            run_with(lab, s1, check_yaml(lab, s1, kind, interval))
            time.sleep(2.0)  # past the start-up's own work
            pid = anycastd_pid(lab, s1)
            # with its reaped children: a command check's programs (ExaBGP runs on, unreaped)
            percent = cpu_percent([pid], seconds, children=True)[pid]
            out[label].append(percent)
            print(f"  round {n + 1}: {label}: {percent:.2f} % of a core", flush=True)
    return out


def loss_rules(percent: int) -> str:
    rule = f"numgen random mod 100 < {percent} drop"
    return (
        f"add table inet {LOSS_TABLE}; add chain inet {LOSS_TABLE} in {{ type filter hook input priority 0; }}; "
        f"add rule inet {LOSS_TABLE} in udp dport 53 {rule}; add rule inet {LOSS_TABLE} in udp sport 53 {rule}; "
        f"add rule inet {LOSS_TABLE} in tcp dport {{ 853, 443 }} {rule}; "
        f"add rule inet {LOSS_TABLE} in tcp sport {{ 853, 443 }} {rule}; "
        f"add rule inet {LOSS_TABLE} in udp sport {zones.PRIMARY_PORT} {rule}"
    )


def loss(lab: BgpLab, percent: int, seconds: float) -> list[dict[str, Any]]:
    s1, s2, s3 = lab.servers
    assert s1.resolver == "bind", "the zone check needs BIND on s1"
    plans = {s1.name: ("dot", "zone"), s2.name: ("doh",), s3.name: ("udp", "command")}
    for s in lab.servers:
        run_with(lab, s, "".join(check_yaml(lab, s, k) for k in plans[s.name]))
    lab.wait_paths(len(lab.servers), timeout=30)
    before = {s.name: status_checks(lab, s) for s in lab.servers}
    for s in lab.servers:
        lab.lab.exec(lab.lab.ns(s.name), "nft", loss_rules(percent))
    withdrawals = {s.name: 0 for s in lab.servers}
    present = set(lab.server_paths())
    ends = time.monotonic() + seconds
    try:
        while time.monotonic() < ends:
            now = set(lab.server_paths())
            for name in present - now:
                withdrawals[name] += 1
                print(f"  {name}: withdrawn ({time.monotonic() - ends + seconds:.1f} s in)", flush=True)
            present = now
            time.sleep(0.01)
    finally:
        for s in lab.servers:
            lab.lab.exec(lab.lab.ns(s.name), "nft", f"delete table inet {LOSS_TABLE}", check=False)
    rows = []
    for s in lab.servers:
        after = status_checks(lab, s)
        for kind, b, a in zip(plans[s.name], before[s.name], after, strict=True):
            rows.append({
                "server": s.name, "resolver": s.resolver_name, "check": kind,
                "probes": a["probes"] - b["probes"], "failed": a["failures"] - b["failures"],
                "withdrawals": withdrawals[s.name],
            })  # fmt: skip
    return rows


def main() -> int:
    def add(p: Any) -> None:
        p.add_argument("--cpu-seconds", type=float, default=30.0)
        p.add_argument("--rounds", type=int, default=2)
        p.add_argument("--loss", type=int, default=5)
        p.add_argument("--loss-seconds", type=float, default=600.0)

    args = arguments(__doc__, "bench/checks.py", add)
    if args is None:
        return 1
    with BgpLab() as lab:
        prepare(lab)
        cpu = cost(lab, args.cpu_seconds, args.rounds)
        lossy = loss(lab, args.loss, args.loss_seconds)
    udp = statistics.median(cpu[COST_ROWS[0][0]])
    table = ["| check | anycastd CPU, % of a core (median of rounds) | rounds | vs UDP |", "|---|---:|---|---:|"]
    for label, _, _ in COST_ROWS:
        values = cpu[label]
        table.append(f"| {label} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} | "
                     f"{statistics.median(values) / udp:.2f}x |")  # fmt: skip
    false = sum(r["withdrawals"] for r in {r["server"]: r for r in lossy}.values())
    verdict = "met" if false == 0 else "missed"
    loss_table = ["| server | resolver | check | probes | failed probes | false withdrawals (server) |",
                  "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for r in lossy:
        loss_table.append(f"| {r['server']} | {r['resolver']} | {r['check']} | {r['probes']:,} | {r['failed']:,} | "
                          f"{r['withdrawals']} |")  # fmt: skip
    publish(
        "bench/checks.py",
        [
            "## Checks that know DNS: cost per kind, and no flapping under probe loss (`bench/checks.py`)",
            "",
            f"Command: `python bench/checks.py --cpu-seconds {args.cpu_seconds:g} --rounds {args.rounds} "
            f"--loss {args.loss} --loss-seconds {args.loss_seconds:g}` (as root).",
            context(),
            "",
            "**Cost.** s1 (BIND 9.18, serving DoT and DoH too) runs anycastd with one service and one check; the CPU",
            f"of anycastd's own process (and of the command's programs it ran) over {args.cpu_seconds:g} s at rest",
            "(no fault, no client traffic); ExaBGP and the resolver are not counted. A DNS check",
            "asks three addresses per probe (the admin address and both service addresses); DoT and DoH keep",
            "their connections (`reuse`, 10 s) and a spare made in the background, so a probe costs a query, not a",
            "handshake.",
            "",
            *table,
            "",
            f"**Loss.** For {args.loss_seconds:g} s, {args.loss} % of the packets every check uses is dropped on each",
            "server (DNS both ways, DoT and DoH segments both ways, the primary's answers); the checks run at",
            "their defaults; the router's FIB is watched every 10 ms. A server leaving it is a false withdrawal.",
            f"Goal: 0 false withdrawals: **{verdict}** ({false}).",
            "",
            *loss_table,
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
