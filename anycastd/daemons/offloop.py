"""Reading a configuration file in a child process, with time and memory limits: a reload never stalls probes.

Theory of operation
-------------------
SIGHUP re-reads the configuration while the probes run. Reading is slow in
the bad cases that matter: a file on a stalled network mount, a pipe that
nobody writes, a huge or hostile file. On the event loop it would delay every
probe, and a delayed probe can withdraw a healthy server. A thread is not
enough either: the parse holds the GIL, and the garbage collector's pauses
over a large file's objects reached 150 ms (bench/reload.py).

So the file is read and validated by a short-lived child process
(``python -m anycastd.daemons.offloop KIND PATH``) that runs the very same loader as
``anycastd check-config``, under an address-space limit (``MEMORY_LIMIT``),
and hands back the validated value (or the list of problems) as a pickle on
its standard output. The loop only waits for that, up to ``READ_TIMEOUT``;
past it, the child is killed and the reload refused. Either way a refusal is
one log line and the running configuration stays. At most one reader runs at
a time; a second SIGHUP meanwhile is refused, saying so.

The pickle comes from our own code in our own child, never from the file:
the file only ever reaches ``load``, which returns frozen dataclasses of
plain values.
"""

from __future__ import annotations

import asyncio
import pickle
import resource
import sys
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from anycastd.errors import ConfigError

READ_TIMEOUT = 10.0  # a valid 500 KiB file (3000 services) takes about 4 s here
MEMORY_LIMIT = 1024 * 1024 * 1024  # address space of the reader: the Python runtime plus a bounded file

T = TypeVar("T")
Kind = Literal["sidecar", "router"]


class OffLoopReader(Generic[T]):
    """``read(path)`` returns the validated configuration of ``kind``, or raises ConfigError."""

    def __init__(self, kind: Kind, timeout: float = READ_TIMEOUT) -> None:
        self.kind = kind
        self.timeout = timeout
        self.busy = False

    async def read(self, path: str) -> T:
        if self.busy:
            raise ConfigError([f"{path}: an earlier reload is still reading it; nothing was changed"])
        self.busy = True
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "anycastd.daemons.offloop",
                self.kind,
                path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise ConfigError(
                    [f"{path}: not read and validated within {self.timeout:g} s; nothing was changed"]
                ) from None
        finally:
            self.busy = False
        if proc.returncode != 0 or not out:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(
                [f"{path}: the reader failed (exit {proc.returncode}: {last[0][:200]}); nothing was changed"]
            )
        outcome, value = pickle.loads(out)  # noqa: S301 (our own child's output; see the module's docstring)
        if outcome == "problems":
            raise ConfigError(value)
        return value  # type: ignore[no-any-return]


def _loader(kind: str) -> Callable[[str], Any]:
    from anycastd.config.router import load_router  # noqa: PLC0415
    from anycastd.config.sidecar import load  # noqa: PLC0415 (the child needs them, the parent does not)

    return {"sidecar": load, "router": load_router}[kind]


def main(argv: list[str]) -> int:
    """The child: read, validate, answer on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    kind, path = argv
    try:
        answer: tuple[str, Any] = ("config", _loader(kind)(path))
    except ConfigError as exc:
        answer = ("problems", exc.problems)
    except MemoryError:
        answer = ("problems", [f"{path}: reading it needed more than {MEMORY_LIMIT >> 20} MiB"])
    sys.stdout.buffer.write(pickle.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
