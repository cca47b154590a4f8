"""Log lines: journald's priorities, ExaBGP's levels relayed, NOTIFICATIONs in words."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anycastd.announce import notification
from anycastd.announce.exabgp import EXABGP_ENV
from anycastd.announce.exabgp_run import levelled
from anycastd.announce.exabgp_text import parse_event, relay
from anycastd.daemons import logs


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("anycastd.daemons.sidecar", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<2>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
        (25, "<6>"),
        (5, "<7>"),
    ],
)
def test_each_level_has_its_journal_priority(level: int, prefix: str) -> None:
    assert (
        logs.JournalFormatter().format(record(level, "dns: up -> falling"))
        == f"{prefix}anycastd.daemons.sidecar: dns: up -> falling"
    )


def test_every_line_of_a_multi_line_message_keeps_the_priority_and_none_has_a_time() -> None:
    text = logs.JournalFormatter().format(record(logging.WARNING, "ExaBGP exited. Its last words:\n  one\n  two"))
    assert text.split("\n") == ["<4>anycastd.daemons.sidecar: ExaBGP exited. Its last words:", "<4>  one", "<4>  two"]


def test_the_journal_is_recognised_by_the_stream_systemd_named(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert logs.to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not logs.to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})  # another stream:
        assert not logs.to_journal(stream, {})  # e.g. stderr redirected to a file by the unit
        assert not logs.to_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not logs.to_journal(stream, {"JOURNAL_STREAM": "\u00b2:1"})  # isdigit() says yes, int() no
        assert not logs.to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}" + "0" * 400})
    assert not logs.to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file descriptor


def test_setup_writes_priorities_to_the_journal_and_timestamps_elsewhere(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with (tmp_path / "journal").open("w") as stream:
            st = os.fstat(stream.fileno())
            assert logs.setup("info", stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
            logging.getLogger("anycastd.daemons.router").warning("FRR is in step again")
            logging.getLogger("anycastd.daemons.router").debug("not at info")
        assert (tmp_path / "journal").read_text() == "<4>anycastd.daemons.router: FRR is in step again\n"
        with (tmp_path / "plain").open("w") as stream:
            assert not logs.setup("debug", stream, {})
            logging.getLogger("anycastd.daemons.router").info("ready")
        line = (tmp_path / "plain").read_text()
        assert line.endswith(" INFO anycastd.daemons.router: ready\n") and line[:4].isdigit()  # 2026-...
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.mark.parametrize(
    ("code", "subcode", "words"),
    [
        (6, 4, "Cease / Administrative Reset"),
        (6, 2, "Cease / Administrative Shutdown"),
        (4, 0, "Hold Timer Expired"),
        (2, 2, "OPEN Message Error / Bad Peer AS"),
        (6, 99, "Cease / subcode 99"),
        (42, 1, "error code 42 / subcode 1"),
    ],
)
def test_a_notification_is_named(code: int, subcode: int, words: str) -> None:
    assert notification.name(code, subcode) == words


def test_a_session_down_line_from_exabgp_says_why_in_words() -> None:
    line = "neighbor 192.0.2.9 down - notification received (6,4)"
    assert str(parse_event(line)) == " (- notification received: Cease / Administrative Reset (6,4))"
    assert str(parse_event("neighbor 192.0.2.9 up")) == ""


@pytest.mark.parametrize(
    ("line", "level", "text"),
    [
        (
            "WARNING outgoing-1      connection to 192.0.2.9 closed",
            logging.WARNING,
            "outgoing-1      connection to 192.0.2.9 closed",
        ),
        (
            "ERROR reactor         notification sent (6,2)",
            logging.ERROR,
            "reactor         notification sent: Cease / Administrative Shutdown (6,2)",
        ),
        ("CRITICAL reactor      problem", logging.ERROR, "reactor      problem"),
        (
            "INFO processes       route added to neighbor 192.0.2.9",
            logging.DEBUG,
            "processes       route added to neighbor 192.0.2.9",
        ),
        ("ERROR advice          environment file missing", logging.DEBUG, "advice          environment file missing"),
        ("reactor   no level: a custom exabgp.command", logging.DEBUG, "reactor   no level: a custom exabgp.command"),
        ("", logging.DEBUG, ""),
    ],
)
def test_exabgps_lines_are_relayed_at_their_level(line: str, level: int, text: str) -> None:
    assert relay(line) == (level, "%s", text)


def test_the_levelled_formatter_leads_with_the_level() -> None:
    assert levelled(True, "stdout")("connection closed", "outgoing-1", "WARNING", time.localtime()) == (
        "WARNING outgoing-1      connection closed"
    )


def test_exabgp_run_gives_every_line_of_the_real_exabgp_a_level(tmp_path: Path) -> None:
    conf = tmp_path / "exabgp.conf"
    # a neighbor on loopback: ExaBGP's connection is refused at once, and nothing leaves this machine
    conf.write_text(
        "neighbor 127.0.0.1 {\n router-id 192.0.2.2;\n local-address 127.0.0.1;\n local-as 65001;\n peer-as 65000;\n}\n"
    )
    env = {**os.environ, **EXABGP_ENV}
    with subprocess.Popen(
        [sys.executable, "-m", "anycastd.announce.exabgp_run", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip() for _ in range(5)]
        proc.terminate()
        proc.wait(10)
    assert all(line.split(" ", 1)[0] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for line in lines), lines
    # its greeting, and its ERROR that no environment file exists (anycastd passes the environment): quiet
    assert [relay(line)[0] for line in lines[:3]] == [logging.DEBUG] * 3, lines
