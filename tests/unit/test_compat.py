"""Every released version's requests, replies and state files (tests/compat/<version>, written by
scripts/compat_corpus.py at its release) are read by today's code: an older anycastctl is understood by this
daemon, an older daemon's replies are shown by this anycastctl, and an older version's drains survive an
upgrade. A version mismatch that cannot be bridged is refused in words that say to restart anycastd."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from anycastd import __version__
from anycastd.cli.anycastctl import print_status, status_code, version_hint
from anycastd.control.protocol import ControlError, StatusReply, decode, decode_reply
from anycastd.daemons.state import decode as decode_state
from tests.helpers import FakeController, Served, ctl

COMPAT = Path(__file__).resolve().parents[1] / "compat"
VERSIONS = sorted(p.name for p in COMPAT.iterdir() if p.is_dir())


def test_the_version_being_built_has_its_corpus() -> None:
    assert __version__ in VERSIONS, f"run `python scripts/compat_corpus.py` (make release does) for {__version__}"


@pytest.mark.parametrize("version", VERSIONS)
def test_this_daemon_reads_every_request_an_older_anycastctl_sends(version: str) -> None:
    lines = (COMPAT / version / "requests.jsonl").read_bytes().splitlines()
    assert lines
    for line in lines:
        decode(line)  # raises ProtocolError naming what it cannot read


@pytest.mark.parametrize("version", VERSIONS)
def test_this_anycastctl_shows_every_reply_an_older_daemon_gives(version: str) -> None:
    entries = [json.loads(line) for line in (COMPAT / version / "replies.jsonl").read_text().splitlines()]
    assert {e["variant"] for e in entries} == {"sidecar", "router"}
    errors = 0
    for entry in entries:
        request = decode(entry["request"].encode())
        try:
            reply = decode_reply(request, entry["reply"].encode())
        except ControlError:
            errors += 1  # the daemon's own refusal, in its words
            continue
        if isinstance(reply, StatusReply):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                print_status(reply.document)
            assert "dns" in out.getvalue()
            status_code(reply.document)
    assert errors == 2  # the corpus's two refused requests, and nothing else


@pytest.mark.parametrize("version", VERSIONS)
def test_an_older_versions_drains_survive_the_upgrade(version: str) -> None:
    sidecar = decode_state((COMPAT / version / "maintenance.json").read_text(), "maintenance.json")
    assert sidecar["dns"].reason == "kernel upgrade"
    router = decode_state((COMPAT / version / "router-maintenance.json").read_text(), "router-maintenance.json")
    assert set(router) == {"ns1", "ns2"}


@pytest.mark.parametrize(
    "error",
    [
        "unknown command 'drain' (expected one of: status, withdraw, announce, check)",
        "withdraw: unknown field(s) weight",
        "anycastd sent an unexpected reply: reply.withdrawn is None",
        "anycastd sent a reply that is not JSON: b'<html>'",
    ],
)
def test_a_request_or_reply_of_another_version_says_to_restart(error: str) -> None:
    hint = version_hint(error)
    assert f"this anycastctl is {__version__}" in hint and "systemctl restart anycastd" in hint


def test_other_errors_get_no_version_hint() -> None:
    assert version_hint("no service 'nope' (configured: dns)") == ""
    assert version_hint("no anycastd listens on /run/anycastd/control.sock") == ""


@pytest.mark.parametrize(
    ("running", "note"),
    [
        (__version__, None),
        ("0.0.9", f"this anycastctl is {__version__}, the running anycastd is 0.0.9: restart anycastd"),
        (None, "the running anycastd is older than 0.1.0"),
    ],
)
def test_anycastctl_status_says_when_the_running_daemon_is_another_version(
    tmp_path: Path, running: str | None, note: str | None
) -> None:
    controller = FakeController()
    first = json.loads((COMPAT / VERSIONS[0] / "replies.jsonl").read_text().splitlines()[0])
    document = json.loads(first["reply"])
    del document["ok"], document["anycastd"]
    if running is not None:
        document["anycastd"] = running
    controller.replies["StatusRequest"] = StatusReply(document)
    with Served(tmp_path / "control.sock", controller):
        shown = ctl(tmp_path / "control.sock", "status")
    assert "dns" in shown.stdout and "Traceback" not in shown.stderr  # shown: the note is all that changes
    if note is None:
        assert "note" not in shown.stderr
    else:
        assert note in shown.stderr


def test_a_status_this_anycastctl_cannot_show_is_refused_in_words(tmp_path: Path) -> None:
    controller = FakeController()
    controller.replies["StatusRequest"] = StatusReply(
        {"version": 2, "anycastd": "9.0.0", "mode": "sidecar", "services": [{"name": "dns"}]}
    )
    with Served(tmp_path / "control.sock", controller):
        shown = ctl(tmp_path / "control.sock", "status")
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert "cannot show this status (KeyError" in shown.stderr and "status --json` prints it whole" in shown.stderr
