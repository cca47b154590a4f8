"""A stand-in for ExaBGP: runs the helper from the generated configuration, acknowledges commands.

Usage (as anycastd runs ExaBGP): python fake_exabgp.py CONFIG. Every command it
receives is appended to CONFIG + ".log"; a route whose prefix is 192.0.2.66/32
is refused with "error", one for 192.0.2.67/32 is never answered, and one for 192.0.2.68/32 is
answered after 1 s of busy work (on the CPU all along: slow, not stuck). API comments (anycastd's
heartbeats) are acknowledged and not logged. It reports every neighbor of the configuration "up".
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

config_path = sys.argv[1]
with open(config_path) as f:
    text = f.read()
run = re.search(r"^\s*run (.*);$", text, re.M)
assert run is not None
neighbors = re.findall(r"^neighbor (\S+) \{", text, re.M)
helper = subprocess.Popen(run.group(1).split(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert helper.stdin is not None and helper.stdout is not None
for n in neighbors:
    helper.stdin.write(f"neighbor {n} up\n".encode())
helper.stdin.flush()
with open(config_path + ".log", "a") as log:
    for raw in helper.stdout:
        line = raw.decode().strip()
        if not line.startswith("#"):  # heartbeats are answered, not logged
            log.write(line + "\n")
            log.flush()
        if "192.0.2.67/32" in line:
            continue
        if "192.0.2.68/32" in line:
            busy_until = time.monotonic() + 1.0
            while time.monotonic() < busy_until:
                pass
        helper.stdin.write(b"error\n" if "192.0.2.66/32" in line else b"done\n")
        helper.stdin.flush()
