"""The fault matrix's measured numbers: run tests/integration/test_faults_*.py and write docs/reliability.md's table.

Usage (root): python bench/reliability.py [--runs N] [--no-write]

Each fault test fills one row (fault, expected state, bound, what it timed); this
script runs the matrix N times, and replaces the table between the markers in
docs/reliability.md with the median and max of each timing over the runs.
The tests themselves assert only the bound; the numbers are for people.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"
TESTS = [
    "tests/integration/test_faults_bgp.py",
    "tests/integration/test_faults_bfd.py",
    "tests/integration/test_pop_lab.py",
    "tests/integration/test_faults_router.py",
]


def run_once() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rows.json"
        env = {**os.environ, "ANYCASTD_FAULT_REPORT": str(report)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], env=env, check=False)
        return json.loads(report.read_text()) if report.exists() else []


def seconds(value: float, what: str) -> str:
    if what == "route changes":
        return f"{value:g}"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def table(runs: list[list[dict[str, Any]]]) -> str:
    lines = [
        "| variant | fault | expected state | bound | measured: median / max | passed | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, first in enumerate(runs[0]):
        same = [run[i] for run in runs if i < len(run) and run[i]["test"] == first["test"]]
        timings = []
        for what in first["measured"]:
            values = [r["measured"][what] for r in same if what in r["measured"]]
            timings.append(
                f"{what}: {seconds(statistics.median(values), what)} / {seconds(max(values), what)}"
                if values
                else f"{what}: -"
            )
        bound = f"{first['bound']:g} s" if first["bound"] is not None else "-"
        passed = f"{sum(r['outcome'] == 'passed' for r in same)}/{len(same)}"
        lines.append(
            f"| {first['variant']} | {first['fault']} | {first['expected']} | {bound} | {'; '.join(timings)} "
            f"| {passed} | `{first['test']}` |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = [rows for _ in range(args.runs) if (rows := run_once())]
    if not runs:
        print("no rows: did the fault tests run (as root)?", file=sys.stderr)
        return 1
    text = table(runs)
    print(text)
    if not args.no_write:
        doc = DOC.read_text()
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        note = (
            f"`python bench/reliability.py --runs {args.runs}` ({len(runs)} runs of the matrix on this machine's lab):"
        )
        DOC.write_text(f"{head}{START}\n{note}\n\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
