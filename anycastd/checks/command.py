"""Command probes (``kind: command``): the operator's own program, run bounded, passes on exit 0.

Theory of operation
-------------------
The program is run from its argv (never a shell) as anycastd's own user, in a new session (its own process
group), from ``/``, with standard input from /dev/null and a minimal environment (``PATH`` and ``LANG``):
nothing of the daemon's environment leaks into it, and nothing it inherits can be used to reach back.
Standard output and standard error are one pipe, read up to ``output_limit`` bytes.

It is bounded three ways, and each is a failed probe with its reason, never a stalled or crashed daemon:

- the timeout: the whole process group is killed (SIGKILL), the program and anything it started;
- the output limit: reading stops, and the group is killed;
- forking away: once the program itself has exited, what it left running in its group is killed, and its
  verdict is its exit status; a child that kept the pipe open does not hold the probe up.

A program that cannot be started (missing, not executable) fails the probe with the error. The first line
of the output (printable characters only, at most 200) goes into the reason that status shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from anycastd.checks.dns import ProbeResult
from anycastd.config.checks import COMMAND_PATH, Check
from anycastd.core.degradation import ExitRule
from anycastd.core.health import Outcome

ENVIRONMENT = {"PATH": COMMAND_PATH, "LANG": "C.UTF-8"}
#: How long the output of a program that has exited may still take to arrive (its pipe's last bytes).
DRAIN = 0.05
SHOWN = 200


def first_line(output: bytes) -> str:
    """The output's first non-empty line as status can show it: printable, at most SHOWN characters."""
    for raw in output.decode("utf-8", "replace").splitlines():
        line = "".join(c if c.isprintable() else "?" for c in raw.strip())
        if line:
            return line if len(line) <= SHOWN else line[: SHOWN - 3] + "..."
    return ""


def _kill_group(pgid: int) -> None:
    # nothing left in it: ProcessLookupError (a PermissionError: the group is gone and its number is another's)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _read(fd: int, limit: int, data: bytearray) -> None:
    """Up to ``limit`` + 1 bytes from the pipe ``fd`` into ``data``, or until its end: one byte more says the
    limit was passed. What was read stays in ``data`` if it is cancelled."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while len(data) <= limit:
            await ready.wait()
            ready.clear()
            try:
                chunk = os.read(fd, limit + 1 - len(data))
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
    finally:
        loop.remove_reader(fd)


def verdict(name: str, code: int, output: bytes, latency: float, degraded: tuple[int, ...] = ()) -> ProbeResult:
    """The probe's result from the program's exit status; a code in ``degraded`` passes, marked degraded."""
    line = first_line(output)
    said = f": {line}" if line else ""
    if code == 0:
        return ProbeResult(Outcome.OK, f"{name}: exit 0{said}", latency, name)
    if code in degraded:
        return ProbeResult(Outcome.OK, f"{name}: exit {code} (degraded){said}", latency, name, degraded=True)
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
        return ProbeResult(Outcome.FAIL, f"{name}: {how}{said}", latency, name, "exit")
    return ProbeResult(Outcome.FAIL, f"{name}: exit {code}{said}", latency, name, "exit")


class CommandProber:
    """Runs command checks (see the module's docstring)."""

    async def probe(self, check: Check) -> ProbeResult:
        argv = check.argv()
        name = os.path.basename(argv[0])
        started = time.monotonic()
        out, into = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            os.set_blocking(into, True)  # the program's end: as any program expects its standard output
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=into, stderr=into, env=ENVIRONMENT, cwd="/",
                start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            os.close(out)
            return ProbeResult(Outcome.FAIL, f"{name}: no such program ({argv[0]})", None, name, "missing")
        except OSError as exc:
            os.close(out)
            reason = (exc.strerror or str(exc)).lower()
            return ProbeResult(Outcome.FAIL, f"{name}: cannot run {argv[0]}: {reason}", None, name, "missing")
        finally:
            os.close(into)  # the program holds it now: the pipe ends when it (and whatever it started) exits
        output = bytearray()
        reading = asyncio.ensure_future(_read(out, check.output_limit, output))
        exiting = asyncio.ensure_future(process.wait())
        try:
            async with asyncio.timeout(check.timeout):
                await asyncio.wait((reading, exiting), return_when=asyncio.FIRST_COMPLETED)
                if len(output) <= check.output_limit:
                    await exiting
            if not exiting.done():
                return _too_much(name, check.output_limit)
            # its last bytes, unless something it left running holds the pipe open
            await asyncio.wait((reading,), timeout=DRAIN)
            if len(output) > check.output_limit:
                return _too_much(name, check.output_limit)
            rule = check.degraded_when
            codes = rule.codes if isinstance(rule, ExitRule) else ()
            return verdict(name, exiting.result(), bytes(output), time.monotonic() - started, codes)
        except TimeoutError:
            ms = f"{check.timeout * 1000:.0f} ms"
            return ProbeResult(Outcome.FAIL, f"{name}: no exit within {ms} (timeout); killed", None, name, "timeout")
        finally:
            _kill_group(process.pid)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            os.close(out)
            await asyncio.shield(exiting)  # reaped at once: its group was just killed


def _too_much(name: str, limit: int) -> ProbeResult:
    return ProbeResult(
        Outcome.FAIL, f"{name}: printed more than {limit} bytes (output_limit); killed", None, name, "output"
    )
