"""The pure core: every decision anycastd makes, as functions and state machines over values.

No asyncio, sockets, subprocesses or clocks here: callers pass results and timestamps in and carry the
returned actions out. Imports: the foundation (anycastd.errors, anycastd.untrusted) and this package only."""
