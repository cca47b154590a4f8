#!/usr/bin/env python3
"""What a start costs before the first probe: the CPU of importing each program's code, before and after.

A sidecar's tree (anycastd, its ExaBGP, the helper) spends most of its start-up CPU importing
Python (docs/benchmarks.md, bench/ecmp_sidecar.py's section), and 64 of them starting on one
machine's two cores wait for each other's imports. This runs a fresh ``python -c 'import M'`` per
program, ``--runs`` times per round, and reports the median CPU (user + system of the child):

* ``anycastd.cli.anycastd``: what `anycastd run` and `anycastd router` import before they read
  their configuration;
* ``anycastd.cli.anycastctl``: the operator's command, on every call;
* ExaBGP's own main (what ``anycastd.announce.exabgp_run`` imports): the same package in both
  trees, for scale;
* an empty ``python -c pass``: the interpreter alone.

With ``--base``, the base revision is checked out into a git worktree and measured by turns with
this tree (``report.alternate``), each with PYTHONPATH set to itself. No root, no lab.

    python bench/startup.py [--base REV] [--rounds 3] [--runs 10] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from report import alternate, before_after_options, context, publish, revision

HERE = Path(__file__).resolve()
PROGRAMS = {
    "anycastd (the daemons)": "import anycastd.cli.anycastd",
    "anycastctl": "import anycastd.cli.anycastctl",
    "ExaBGP (its main)": "import exabgp.logger, exabgp.application.main",
    "the interpreter alone": "pass",
}


def cpu_ms(code: str) -> float:
    """The CPU, in ms, of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def measure(runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    for code in PROGRAMS.values():
        cpu_ms(code)  # not counted: a fresh worktree's first start compiles its bytecode
    for _ in range(runs):
        for name, code in PROGRAMS.items():
            out[name].append(cpu_ms(code))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    before_after_options(parser, rounds=3, unit="rounds")
    parser.add_argument("--runs", type=int, default=10, help="starts of each program per round (default 10)")
    args = parser.parse_args()
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(args.runs)))
        return 0
    names, runs = alternate(HERE, ["--runs", str(args.runs)], args.base, args.rounds)
    pooled = {tree: {p: [x for run in runs[tree] for x in run[p]] for p in PROGRAMS} for tree in names}
    head = ["program", *(f"{tree}, median / min ms" for tree in names)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(names) + "|"]
    for program in PROGRAMS:
        cells = [f"{statistics.median(pooled[t][program]):.0f} / {min(pooled[t][program]):.0f}" for t in names]
        lines.append(f"| {program} | " + " | ".join(cells) + " |")
    base = f" --base {revision(args.base)}" if args.base else ""
    n = args.rounds * args.runs
    publish(
        "bench/startup.py",
        [
            "## A start's imports: CPU before the first probe",
            "",
            f"Command: `python bench/startup.py{base} --rounds {args.rounds} --runs {args.runs}`. {context()}",
            f"Each program is a fresh `python -c 'import ...'`; CPU is the child's user + system time, {n} starts "
            "per program and tree, the trees by turns. The daemons' row is what `anycastd run` and `anycastd router` "
            "import before reading their configuration; a sidecar's start adds its ExaBGP's (a row of its own, "
            "the same package in both trees) and the helper's (the standard library only).",
            "",
            *lines,
        ],
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
