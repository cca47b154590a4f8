"""Reloads read the file in a child process: a pipe nobody writes stalls the child (killed at the deadline), never
the loop."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from anycastd.cli.anycastd import _reload
from anycastd.config.sidecar import Config
from anycastd.daemons.offloop import OffLoopReader
from anycastd.errors import ConfigError
from tests.helpers import GOOD, make_sidecar
from tests.unit.fake_time import until


def _fifo(tmp_path: Path) -> Path:
    """A FIFO whose writer never writes nor closes: the reader waits for it (up to its own deadline of 5 s).
    A FIFO with no writer at all reads as empty at once (anycastd.untrusted)."""
    path = tmp_path / "anycastd.yaml"
    os.mkfifo(path)
    _writers.append(os.open(path, os.O_RDWR | os.O_NONBLOCK))  # held open until the process ends
    return path


_writers: list[int] = []


def test_a_stuck_file_is_refused_at_the_deadline_and_the_loop_runs_meanwhile(tmp_path: Path) -> None:
    path = _fifo(tmp_path)
    reader: OffLoopReader[Config] = OffLoopReader("sidecar", timeout=0.3)

    async def go() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        first = asyncio.ensure_future(reader.read(str(path)))
        await until(lambda: reader.busy, "the first reader")
        with pytest.raises(ConfigError, match="an earlier reload is still reading it; nothing was changed"):
            await reader.read(str(path))
        with pytest.raises(ConfigError, match=r"not read and validated within 0\.3 s; nothing was changed"):
            await first
        assert not reader.busy  # the stuck child was killed
        ticker.cancel()
        return ticks

    ticks = asyncio.run(go())
    assert ticks > 0  # a read on the loop would have blocked it: not one tick


def test_a_good_file_is_read_and_a_bad_one_refused_with_the_loaders_error(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("local_asn: 65001", "local_asn: .nan"))
    reader: OffLoopReader[Config] = OffLoopReader("sidecar")
    assert isinstance(asyncio.run(reader.read(str(good))), Config)
    with pytest.raises(ConfigError, match="local_asn: must be a whole number"):
        asyncio.run(reader.read(str(bad)))


def test_sighup_on_a_stuck_file_keeps_the_running_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _fifo(tmp_path)
    sidecar, _, _, _ = make_sidecar()
    before = sidecar.config
    reader: OffLoopReader[Config] = OffLoopReader("sidecar", timeout=0.5)
    with caplog.at_level(logging.ERROR, logger="anycastd"):
        asyncio.run(_reload(sidecar, str(path), reader))
    assert sidecar.config is before
    assert "reload refused: 1 problem(s); the running configuration stays as it was" in caplog.text
