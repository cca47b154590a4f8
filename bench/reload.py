#!/usr/bin/env python3
"""How long a reload can hold up a probe: the event loop's worst delay while SIGHUP reads a file.

A probe is a timer on the event loop, so the loop's lag is how late a probe
starts. A ticker wakes every 10 ms while OffLoopReader (the SIGHUP path)
reads each kind of file; the table gives the worst lateness of a tick.
Prints a table; the numbers in docs/security.md come from this command.

    python bench/reload.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

import anycastd.config.sidecar  # noqa: E402, F401 (imported, as in the daemon: a reload does not pay for it)
from anycastd.daemons.offloop import OffLoopReader  # noqa: E402
from anycastd.errors import ConfigError  # noqa: E402

TICK = 0.01


def _big_valid() -> str:
    """A valid file of about 500 KiB: many services, each with its checks (far beyond any real one)."""
    head = (ROOT / "examples" / "anycastd.yaml").read_text().split("services:")[0]
    body = "services:\n"
    for i in range(3000):
        body += (
            f"  s{i}:\n    prefixes: [203.0.113.{i % 250 + 1}/32]\n"
            f"    checks:\n      - {{address: 192.0.2.10, qname: h{i}.example, interval: 0.5, timeout: 0.25}}\n"
        )
    return head + body


def _alias_bomb() -> str:
    text = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    prev = "a"
    for c in "bcdefghi":
        text += f"{c}: &{c} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = c
    return text


async def _lag_during(path: str, reader: OffLoopReader[object]) -> tuple[float, str]:
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            due = time.monotonic() + TICK
            await asyncio.sleep(TICK)
            worst = max(worst, time.monotonic() - due)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    try:
        await reader.read(path)
        outcome = "read"
    except ConfigError as exc:
        outcome = "refused: " + exc.problems[0].split(": ", 1)[1][:50]
    took = time.monotonic() - started
    done = True
    await ticker
    return worst, f"{outcome} ({took * 1000:.0f} ms)"


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "the example": (ROOT / "examples" / "anycastd.yaml").read_text(),
            "3000 services (valid, ~500 KiB)": _big_valid(),
            "alias bomb": _alias_bomb(),
            "1 MiB of one comment": "#" + "x" * (1024 * 1024 - 10) + "\n",
        }
        for name, text in files.items():
            path = Path(tmp) / "f.yaml"
            path.write_text(text)
            worst, outcome = asyncio.run(_lag_during(str(path), OffLoopReader("sidecar")))
            rows.append((name, worst, outcome))
        fifo = Path(tmp) / "pipe.yaml"
        os.mkfifo(fifo)
        worst, outcome = asyncio.run(_lag_during(str(fifo), OffLoopReader("sidecar", timeout=2.0)))
        rows.append(("a pipe nobody writes (2 s deadline)", worst, outcome))
        threading.Thread(target=lambda: fifo.write_text("x: 1\n"), daemon=True).start()
    print(f"{'file read by SIGHUP':40} {'worst probe delay':>18}  outcome")
    for name, worst, outcome in rows:
        print(f"{name:40} {worst * 1000:15.1f} ms  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
