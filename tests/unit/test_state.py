"""The maintenance file: round trip, atomic replacement, and every way it can be broken."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from anycastd.daemons.state import FILE_NAME, FileStore, Maintenance, StateError

DRAINED = {"dns": Maintenance("kernel upgrade", "root (sudo by alice)", 1795000000.5)}


def test_round_trip_and_nothing_left_behind(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    assert store.load() == {}  # a fresh install: no maintenance
    store.save(DRAINED)
    assert store.load() == DRAINED
    assert os.listdir(tmp_path / "state") == [FILE_NAME]
    store.save({})
    assert store.load() == {}


def test_a_soft_drain_round_trips_and_a_hard_one_is_written_as_before(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    both = {**DRAINED, "dot": Maintenance("rollout", "root", 1795000001.0, soft=True)}
    store.save(both)
    assert store.load() == both
    written = json.loads((tmp_path / "state" / FILE_NAME).read_text())["drained"]
    assert written["dot"]["soft"] is True and "soft" not in written["dns"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not JSON"),
        (b'{"version": 1, "drained": {"dns": {"reas', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "not a version 1 maintenance file"),
        (b'{"version": 2, "drained": {}}', "not a version 1 maintenance file"),
        (b'{"version": 1, "drained": []}', "'drained' must be a mapping"),
        (
            b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y"}}}',
            "the entry for 'dns' needs exactly reason",
        ),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": true}}}', "the entry for 'dns'"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": NaN}}}', "NaN is not a number"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": 1e300}}}', "the entry for 'dns'"),
        # issue 27: an integer too large for a float was an OverflowError at start, a crash loop under systemd
        (
            b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": 1' + b"0" * 400 + b"}}}",
            r"not JSON \(an integer of 401 digits \(at most 20\)",
        ),
        (b'{"version": 1' + b"0" * 30 + b', "drained": {}}', "not JSON"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": 1e400}}}', "too large"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": -1}}}', "the entry for 'dns'"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x\\n", "who": "y", "since": 1}}}', "the entry for 'dns'"),
        (b'{"version": 1, "drained": {"../x": {"reason": "x", "who": "y", "since": 1}}}', "is not a service or server"),
        (
            b'{"version": 1, "drained": {"dns\\n": {"reason": "x", "who": "y", "since": 1}}}',
            "is not a service or server",
        ),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": 1, "e": 2}}}', "needs exactly"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": 1, "soft": false}}}', "soft: true"),
        (b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "y", "since": 1, "soft": 1}}}', "may say soft"),
        (b'{"version": 1, "drained": {"dns": {"reason": "' + b"x" * 300 + b'", "who": "y", "since": 1}}}', "at most"),
        (b'{"version": 1, "drained": {}, "pad": "' + b"x" * 300_000 + b'"}', "larger than 256 KiB"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_a_corrupt_file_is_an_error_and_is_moved_aside(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(StateError, match=message) as info:
        FileStore(tmp_path).load()
    assert "moved aside to" in str(info.value)
    assert not (tmp_path / FILE_NAME).exists()
    [bad] = tmp_path.glob(f"{FILE_NAME}.bad-*")
    assert bad.read_bytes() == content
    assert FileStore(tmp_path).load() == {}  # the daemon saves a withdraw-everything file next (test_sidecar)


def test_a_state_path_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()
    with pytest.raises(StateError, match=r"not a regular file|cannot read"):
        FileStore(tmp_path).load()


def test_an_unwritable_directory_is_an_error_and_the_old_file_stays(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.save(DRAINED)
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(StateError, match="cannot save the maintenance state"):
        FileStore(blocker).save({})
    assert store.load() == DRAINED


def test_a_fifo_or_a_directory_is_not_read_and_is_moved_aside(tmp_path: Path) -> None:
    fifo, directory = tmp_path / "a", tmp_path / "b"
    fifo.mkdir()
    directory.mkdir()
    os.mkfifo(fifo / FILE_NAME)  # nobody writes to it: opening it must not wait for a writer
    with pytest.raises(StateError, match=r"a FIFO \(named pipe\), not a regular file; moved aside"):
        FileStore(fifo).load()
    (directory / FILE_NAME).mkdir()
    with pytest.raises(StateError, match="a directory, not a regular file; moved aside"):
        FileStore(directory).load()
