"""Reading what someone else wrote (anycastd.untrusted): files that are not files, numbers that are not numbers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from anycastd import untrusted
from anycastd.cli.anycastd import main
from anycastd.config import yamlfile
from anycastd.errors import ConfigError
from tests.helpers import GOOD


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1" + "0" * 400, "an integer of 401 digits (at most 20)"),
        ("-" + "9" * 21, "an integer of 21 digits (at most 20)"),
        ("1e400", "1e400 is too large for a number"),
        ("NaN", "NaN is not a number"),
        ("[Infinity]", "Infinity is not a number"),
        ('{"a": -Infinity}', "-Infinity is not a number"),
    ],
)
def test_numbers_no_reader_expects_are_refused_as_they_are_parsed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        untrusted.loads(text)


def test_numbers_anycastd_reads_are_kept() -> None:
    assert untrusted.loads('{"since": 1795000000.5, "n": 18446744073709551615, "x": -3}') == {
        "since": 1795000000.5,
        "n": 2**64 - 1,  # a u64 counter (nft's packets) has 20 digits
        "x": -3,
    }


def test_a_regular_file_is_read_up_to_one_byte_past_its_limit(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert untrusted.read_file(tmp_path / "f", 10) == b"x" * 11
    assert untrusted.read_file(tmp_path / "f", 1000) == b"x" * 100


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a FIFO (named pipe)"),
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: p.symlink_to("/dev/null"), "a character device"),
    ],
)
def test_anything_but_a_regular_file_is_refused_at_once(tmp_path: Path, make: object, kind: str) -> None:
    path = tmp_path / "f"
    make(path)  # type: ignore[operator]
    started = time.monotonic()
    with pytest.raises(untrusted.UntrustedFileError, match=f"^{kind.replace('(', '.').replace(')', '.')}, not a"):
        untrusted.read_file(path, 100)
    assert time.monotonic() - started < 2  # a FIFO is never waited on


def test_a_pipe_is_read_to_its_end_where_pipes_are_allowed() -> None:
    read, write = os.pipe()

    def writer() -> None:
        time.sleep(0.05)
        os.write(write, b"hello ")
        time.sleep(0.05)
        os.write(write, b"world")
        os.close(write)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert untrusted.read_file(f"/proc/self/fd/{read}", 100, pipes=True) == b"hello world"
    finally:
        thread.join()
        os.close(read)


def test_a_pipe_whose_writer_never_finishes_times_out(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(untrusted.UntrustedFileError, match=r"a pipe whose writer did not finish within 0\.2 s"):
            untrusted.read_file(path, 100, pipes=True, deadline=0.2)
    finally:
        os.close(writer)


def test_a_fifo_as_the_configuration_never_hangs_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 27: `anycastd check-config FIFO` waited forever for a writer."""
    path = tmp_path / "anycastd.yaml"
    os.mkfifo(path)
    started = time.monotonic()
    assert main(["check-config", str(path)]) == 1
    assert time.monotonic() - started < 2  # nobody writes to it: it reads as empty, at once
    assert "nothing was changed" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot be the configuration: it is a directory, not a regular file"):
        yamlfile.read_text(tmp_path)


def test_a_configuration_given_through_a_pipe_is_still_read() -> None:
    read, write = os.pipe()
    os.write(write, GOOD.encode())
    os.close(write)
    try:
        assert yamlfile.read_text(f"/proc/self/fd/{read}") == GOOD
    finally:
        os.close(read)


def test_frr_policy_never_waits_on_a_fifo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "frr.conf"
    os.mkfifo(fifo)
    server = Path(__file__).parents[2] / "containerlab" / "s1" / "anycastd.yaml"
    assert main(["frr-policy", "--check", str(fifo), f"s1={server}"]) == 1
    assert f"{fifo}: it is a FIFO (named pipe), not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "number"), [("5000000", 5000000), ("\u00b2", None), ("1" * 21, None), ("", None)])
def test_a_number_from_the_environment_is_ascii_digits_and_bounded(text: str, number: int | None) -> None:
    assert untrusted.whole_number(text) == number
