#!/usr/bin/env python3
"""BFD on a lossy link, with and without flap damping of the BFD sessions (issue 26).

In the dual-homed POP, s1's uplink to r1 loses a share of its frames each way (an nftables
netdev chain at both ends, no change of carrier) for --seconds. BFD at 100 ms x 3 goes down
whenever three packets in a row are lost, r1 resets its BGP session with s1 and drops s1's
path, and ExaBGP connects again at once: each flap is two route changes in r1's FIB. Counted
here (r1's kernel FIB, sampled every 2 ms) with the servers' `bfd: {damping: false}`, then
with the default, which holds a flapping session back once its penalty reaches `suppress`.

    python bench/flaps.py [--loss PERCENT] [--seconds N] [--no-write]
"""

from __future__ import annotations

import itertools
import time

from report import arguments, context, publish

from anycastd_lab import daemons
from anycastd_lab.fib import FibWatch
from anycastd_lab.pop import PopLab
from anycastd_lab.topology import SERVICE_V4, Server


class Lab(PopLab):
    damping = True

    def anycastd_config(self, server: Server) -> str:
        bfd = f"{{interval: 0.1, multiplier: 3, damping: {str(self.damping).lower()}}}"
        return daemons.anycastd_config(self.lab, server, bfd=bfd)


def changes(pop: Lab, loss: int, seconds: float) -> tuple[int, bool]:
    """Route changes of s1 in r1's FIB while the link is lossy, and whether s1 is in r1's FIB at the end."""
    s1 = pop.servers[0]
    mine = pop.links_of(s1)["r1"][0]  # s1's address on the link: what r1 routes to
    with FibWatch(pop.lab.ns("r1"), SERVICE_V4) as watch:
        pop.cut_uplink(s1, "r1", percent=loss)
        time.sleep(seconds)
        seen = watch.seen()
    pop.cut_uplink(s1, "r1", on=False)
    return sum((mine in a) != (mine in b) for a, b in itertools.pairwise(seen)), mine in seen[-1]


def main() -> int:
    def add(p: object) -> None:
        p.add_argument("--loss", type=int, default=50, help="percent of frames lost each way (default 50)")  # type: ignore[attr-defined]
        p.add_argument("--seconds", type=float, default=60.0, help="how long the link is lossy (default 60)")  # type: ignore[attr-defined]

    args = arguments(__doc__, "bench/flaps.py", add)
    if args is None:
        return 1
    rows = []
    with Lab() as pop:
        for damping in (False, True):
            pop.damping = damping
            pop.restore()  # every anycastd started again with this setting
            count, present = changes(pop, args.loss, args.seconds)
            row = (
                f"| `damping: {str(damping).lower()}` | {count} | {60 * count / args.seconds:.1f} | "
                f"{'in' if present else 'out'} |"
            )
            print(row, flush=True)
            rows.append(row)
    lines = [
        "## BFD on a lossy link: flap damping of the sessions (`bench/flaps.py`)",
        "",
        context(),
        f"`python bench/flaps.py --loss {args.loss} --seconds {args.seconds:g}`: s1's uplink to r1 in the POP loses",
        f"{args.loss} % of its frames each way for {args.seconds:g} s; BFD 100 ms x 3. Route changes of s1 in r1's",
        "kernel FIB (sampled every 2 ms):",
        "",
        "| servers' `bfd` | route changes | per minute | s1 at r1 at the end |",
        "|---|---:|---:|---|",
        *rows,
    ]
    publish("bench/flaps.py", lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
