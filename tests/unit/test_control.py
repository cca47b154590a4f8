"""The control protocol and server: every request decodes or is refused whole; bad clients hurt nothing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anycastd.cli import anycastctl
from anycastd.control import protocol as control
from anycastd.control import server as control_server
from anycastd.control.client import call
from anycastd.control.protocol import (
    AnnounceReply,
    AnnounceRequest,
    CheckReply,
    CheckRequest,
    ControlError,
    DrainOutcome,
    ProbeOutcome,
    ProtocolError,
    Reply,
    Request,
    StatusReply,
    StatusRequest,
    WithdrawReply,
    WithdrawRequest,
    decode,
    decode_reply,
    encode,
    encode_reply,
)
from anycastd.control.server import ControlServer
from anycastd.peer import Peer
from tests.helpers import FakeController, Served, ctl


@pytest.mark.parametrize(
    "request_",
    [
        StatusRequest(),
        StatusRequest("dns"),
        WithdrawRequest("dns", "kernel upgrade", "alice", True, 12.5),
        WithdrawRequest(None, "rack move"),
        AnnounceRequest(None),
        AnnounceRequest("dns"),
        CheckRequest("dns"),
        WithdrawRequest(None, "kernel upgrade", "alice", True, 5.0, "ns2"),
        AnnounceRequest(None, "ns2"),
        WithdrawRequest("dns", "rollout", "alice", True, None, None, True),
    ],
)
def test_every_request_survives_the_wire(request_: Request) -> None:
    line = encode(request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == request_


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"hello", "not a JSON request"),
        (b"\xff\xfe", "not a JSON request"),
        (b"[1, 2]", "a request is a JSON object with a 'command'"),
        (b'{"command": "reboot"}', "unknown command 'reboot' (expected one of: status, withdraw, announce, check)"),
        (b"{}", "unknown command None"),
        (b'{"command": "status", "verbose": true}', "status: unknown field(s) verbose"),
        (
            b'{"command": "announce", "service": "dns", "server": "ns1"}',
            "announce: give a service or a server, not both",
        ),
        (b'{"command": "announce", "server": "../x"}', "'server' must be a server name, got '../x'"),
        (b'{"command": "status", "service": 5}', "'service' must be a service name, got 5"),
        (b'{"command": "status", "service": "../etc"}', "'service' must be a service name"),
        (b'{"command": "status", "service": "dns\\n"}', "'service' must be a service name"),
        (b'{"command": "check"}', "'service' must be a service name, got None"),
        (b'{"command": "withdraw", "service": "dns"}', "withdraw: 'reason' must be 1 to 200 printable characters"),
        (b'{"command": "withdraw", "service": "dns", "reason": "  "}', "'reason' must be 1 to 200"),
        (b'{"command": "withdraw", "service": "dns", "reason": "a\\nb"}', "'reason' must be 1 to 200"),
        (b'{"command": "withdraw", "service": "dns", "reason": "' + b"x" * 201 + b'"}', "'reason' must be 1 to 200"),
        (b'{"command": "withdraw", "service": "dns", "reason": "r", "wait": "yes"}', "'wait' must be true or false"),
        (b'{"command": "withdraw", "service": "dns", "reason": "r", "timeout": 0}', "'timeout' must be a number"),
        (b'{"command": "withdraw", "service": "dns", "reason": "r", "timeout": true}', "'timeout' must be a number"),
        (b'{"command": "withdraw", "service": "dns", "reason": "r", "timeout": 1e9}', "'timeout' must be a number"),
        (b'{"command": "withdraw", "service": "dns", "reason": "r", "user": 7}', "'user' must be a short printable"),
        (b'{"command": "withdraw", "service": "dns", "reason": "r", "soft": 1}', "'soft' must be true or false"),
        (b'{"command": "status", "soft": true}', "status: unknown field(s) soft"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=None) as info:
        decode(line)
    assert message in str(info.value)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path / "control.sock", FakeController()) as s:
        yield s


def raw(path: Path, payload: bytes, shut: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def replies(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_garbage_gets_an_error_and_the_next_request_on_the_same_connection_is_served(served: Served) -> None:
    out = replies(raw(served.path, b'nonsense\n{"command": "status"}\n\n{"command":"check","service":"nope"}\n'))
    assert out[0] == {"ok": False, "error": "not a JSON request (Expecting value: line 1 column 1 (char 0))"}
    assert out[1] == {"ok": True, "echo": "StatusRequest", "services": []}
    assert out[2] == {"ok": False, "error": "no service 'nope' (configured: dns)"}
    assert [type(r).__name__ for r, _ in served.controller.seen] == ["StatusRequest", "CheckRequest"]


def test_a_bug_in_a_handler_is_an_error_reply_not_a_dead_daemon(served: Served) -> None:
    assert replies(raw(served.path, b'{"command":"check","service":"bug"}\n')) == [
        {"ok": False, "error": "internal error; see anycastd's log"}
    ]
    assert replies(raw(served.path, b'{"command":"status"}\n'))[0]["ok"] is True


def test_a_half_written_request_is_dropped_unread(served: Served) -> None:
    assert raw(served.path, b'{"command": "withdraw", "service": "dns", "rea') == b""
    assert served.controller.seen == []


def test_an_oversize_line_closes_the_connection(served: Served) -> None:
    out = replies(raw(served.path, b"x" * (control.MAX_LINE + 10) + b"\n"))
    assert out == [{"ok": False, "error": f"request longer than {control.MAX_LINE} bytes; closing"}]
    assert served.controller.seen == []


def test_a_silent_client_is_dropped(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_server, "REQUEST_TIMEOUT", 0.2)
    assert replies(raw(served.path, b"", shut=False)) == [{"ok": False, "error": "no request within 0.2 s; closing"}]


def test_a_trickling_client_is_dropped_at_the_request_deadline(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slowloris: one byte every 50 ms, never a whole line. The deadline is for the whole request."""
    monkeypatch.setattr(control_server, "REQUEST_TIMEOUT", 0.3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(served.path))
        sock.setblocking(True)
        got = b""
        for byte in b'{"command": "status", "service": "dns", "padding": "' * 20:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.05)
            try:
                got += sock.recv(4096)
                break
            except TimeoutError:
                continue
    assert replies(got) == [{"ok": False, "error": "no request within 0.3 s; closing"}]
    assert served.controller.seen == []


def test_the_operator_gets_in_past_64_idle_clients_and_a_slowloris(served: Served) -> None:
    """The cap closes the longest-waiting idle connection to make room: `anycastctl status` answers at once."""
    idle = []
    try:
        for _ in range(64):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(served.path))
            idle.append(sock)
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(served.path))
        slow.send(b'{"comm')
        idle.append(slow)
        reply = call(served.path, StatusRequest(), timeout=1.0)
        assert reply == StatusReply({"echo": "StatusRequest", "services": []})
        # the oldest idle connections were closed (each gets EOF), the newest stay open
        idle[0].settimeout(1.0)
        assert idle[0].recv(10) == b""
    finally:
        for sock in idle:
            sock.close()


def test_when_every_slot_is_answering_a_newcomer_is_told_the_daemon_is_busy(tmp_path: Path) -> None:
    release = asyncio.Event()

    class Slow(FakeController):
        async def handle(self, request: Request, peer: Peer) -> Reply:
            await release.wait()
            return StatusReply({"services": []})

    with Served(tmp_path / "c.sock", Slow()) as s:
        busy = []
        try:
            for _ in range(control_server.MAX_CLIENTS):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(s.path))
                sock.sendall(b'{"command":"status"}\n')
                busy.append(sock)
            # until every connection is being answered
            assert _until(lambda: len(s.server._clients) == control_server.MAX_CLIENTS and not s.server._waiting)
            assert replies(raw(s.path, b"", shut=False)) == [
                {"ok": False, "error": f"busy: {control_server.MAX_CLIENTS} requests are being answered"}
            ]
        finally:
            s.loop.call_soon_threadsafe(release.set)
            for sock in busy:
                sock.close()


def test_a_client_that_never_reads_is_cut_off(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_server, "WRITE_TIMEOUT", 0.2)
    served.controller.replies["StatusRequest"] = StatusReply(
        {"blob": "x" * 4_000_000, "services": []}
    )  # more than the socket buffers hold
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(str(served.path))
        sock.sendall(b'{"command":"status"}\n')
        assert _until(lambda: bool(served.controller.seen))  # accepted and answered ...
        assert _until(lambda: not served.server._clients)  # ... and cut off, although we never read


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Wait for a state of the server's thread (polling: it runs on its own loop)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize(
    ("peer", "group", "allowed"),
    [
        (Peer(1, 0, 0), None, True),
        (Peer(1, os.geteuid(), 0), None, True),
        (Peer(1, 4242, 4242), None, False),
        (Peer(1, -1), "root", False),
        (Peer(1, 4242, 0), "root", True),  # primary group from SO_PEERCRED
    ],
)
def test_who_may_change_state(peer: Peer, group: str | None, allowed: bool) -> None:
    assert control_server.may_change_state(peer, group) is allowed


def test_a_reader_may_ask_for_status_but_not_withdraw(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_server, "may_change_state", lambda peer, group: False)
    out = replies(raw(served.path, b'{"command":"status"}\n{"command":"withdraw","reason":"x"}\n'))
    assert out[0]["ok"] is True
    assert out[1]["ok"] is False and "may read the status but not change it" in out[1]["error"]
    assert [type(r).__name__ for r, _ in served.controller.seen] == ["StatusRequest"]


def test_the_peer_is_who_the_kernel_says(served: Served) -> None:
    raw(served.path, b'{"command":"status"}\n')
    _, peer = served.controller.seen[0]
    assert peer.uid == os.getuid() and peer.pid == os.getpid()


def test_socket_mode_and_a_second_daemon_is_refused(served: Served) -> None:
    assert served.path.stat().st_mode & 0o777 == 0o660
    second = ControlServer(served.path, FakeController())
    with pytest.raises(ControlError, match="another anycastd is already serving"):
        asyncio.run(second.start())
    assert served.path.exists()  # the first one's socket was left alone
    # ... and it still serves. (This round trip also lets it finish accepting the second one's probe
    # before the fixture closes it: Python 3.11 leaks a connection accepted while its server closes.)
    assert replies(raw(served.path, b'{"command":"status"}\n'))[0]["ok"] is True


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a killed daemon leaves
    with Served(path, FakeController()):
        assert replies(raw(path, b'{"command":"status"}\n'))[0]["ok"] is True
    assert not path.exists()


# anycastctl as a real subprocess against a served socket ----------------------

STATUS = {
    "version": 1,
    "config": "/etc/anycastd/anycastd.yaml",
    "problem": None,
    "services": [
        {
            "name": "dns",
            "state": "maintenance",
            "announced": False,
            "since": "2026-11-22T10:00:00.000Z",
            "prefixes": [{"prefix": "203.0.113.53/32", "announced": False}],
            "maintenance": {"reason": "kernel upgrade", "who": "root (sudo by alice)", "since": "2026-11-22T10:00:00Z"},
            "checks": [
                {
                    "index": 0,
                    "address": "192.0.2.10",
                    "state": "up",
                    "probes": 12,
                    "failures": 1,
                    "last": {"ok": True, "reason": "192.0.2.10: NOERROR in 1 ms", "latency_ms": 0.61},
                }
            ],
            "transitions": [
                {
                    "at": "2026-11-22T10:00:00.000Z",
                    "name": "dns",
                    "from": "up",
                    "to": "maintenance",
                    "reason": "maintenance: kernel upgrade",
                }
            ],
        }
    ],
    "bgp": {"192.0.2.9": "up"},
    "exabgp": {
        "backend": "exabgp",
        "pid": 4242,
        "state": "up",
        "last_answer": "2026-11-22T10:05:00.100Z",
        "problem": "ExaBGP answered no heartbeat within 1 s",
        "restarts": 1,
        "connected": True,
    },
}


def test_anycastctl_status_table_and_json(served: Served) -> None:
    served.controller.replies["StatusRequest"] = StatusReply(STATUS)
    human = ctl(served.path, "status")
    assert human.returncode == 5, human.stderr  # dns is withdrawn (maintenance)
    lines = human.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "ANNOUNCED", "SINCE", "(UTC)"]
    assert lines[1].split() == ["dns", "maintenance", "no", "2026-11-22", "10:00:00"]
    assert "  prefixes: 203.0.113.53/32 withdrawn" in lines
    assert "  maintenance: kernel upgrade (by root (sudo by alice), since 2026-11-22 10:00:00)" in lines
    assert "  checks[0] 192.0.2.10: up, 12 probes, 1 failed; last ok 0.6 ms: 192.0.2.10: NOERROR in 1 ms" in lines
    assert lines[-2:] == [
        "BGP: 192.0.2.9 up; ExaBGP pid 4242 up, last answer 2026-11-22 10:05:00, 1 restart(s)",
        "ExaBGP's last problem: ExaBGP answered no heartbeat within 1 s",
    ]
    machine = ctl(served.path, "status", "dns", "--json")
    assert json.loads(machine.stdout) == {"ok": True, **STATUS}
    assert served.controller.seen[-1][0] == StatusRequest("dns")
    assert machine.returncode == 5
    before = ctl(served.path, "--json", "status", "dns")  # a global option, before the command
    assert (before.stdout, before.returncode) == (machine.stdout, 5)


def test_anycastctl_withdraw_sends_who_and_waits(served: Served) -> None:
    served.controller.replies["WithdrawRequest"] = WithdrawReply(
        ("dns",), drain=DrainOutcome(True, "drained", "nftables", 1.52, 37, "no packet for 1 s")
    )
    result = ctl(served.path, "withdraw", "dns", "--reason", "kernel upgrade", "--wait", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "dns: withdrawn for maintenance\n"
        "drained after 1.52 s (nftables: no packet for 1 s, 37 packets after the withdrawal)\n"
    )
    assert served.controller.seen[-1][0] == WithdrawRequest("dns", "kernel upgrade", "alice", True, 20.0)


def test_a_plain_withdraw_does_not_send_soft_and_withdraw_soft_does(served: Served) -> None:
    assert b"soft" not in encode(WithdrawRequest("dns", "kernel upgrade"))  # an older anycastd reads it as before
    assert b'"soft":true' in encode(WithdrawRequest("dns", "rollout", soft=True))
    served.controller.replies["WithdrawRequest"] = WithdrawReply(("dns",))
    result = ctl(served.path, "withdraw", "dns", "--reason", "rollout", "--soft")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "dns: soft-drained for maintenance (path kept, tagged GRACEFUL_SHUTDOWN)\n"
    assert served.controller.seen[-1][0] == WithdrawRequest("dns", "rollout", "alice", soft=True)


def test_anycastctl_withdraw_timed_out_exits_3(served: Served) -> None:
    served.controller.replies["WithdrawRequest"] = WithdrawReply(
        ("dns",), drain=DrainOutcome(False, "timeout", "nftables", 5.0, 900, "still receiving")
    )
    result = ctl(served.path, "withdraw", "--all", "--reason", "x", "--wait")
    assert result.returncode == 3
    assert "NOT drained after 5.00 s" in result.stdout
    assert served.controller.seen[-1][0].service is None


def test_anycastctl_timer_fallback_is_said_out_loud(served: Served) -> None:
    note = "could not measure traffic (no nft); waited the fixed drain.fallback of 5 s instead"
    served.controller.replies["WithdrawRequest"] = WithdrawReply(
        ("dns",), "cannot save the maintenance state", DrainOutcome(True, "drained", "timer", 5.0, None, note)
    )
    result = ctl(served.path, "withdraw", "dns", "--reason", "x", "--wait")
    assert result.returncode == 0
    assert f"anycastctl: {note}" in result.stderr
    assert "anycastctl: warning: cannot save the maintenance state" in result.stderr


def test_anycastctl_check_exit_codes(served: Served) -> None:
    served.controller.replies["CheckRequest"] = CheckReply(
        "dns",
        (ProbeOutcome(0, False, "refused", "dns", "192.0.2.10: connection refused", None, "2026-11-22T10:00:00Z"),),
    )
    result = ctl(served.path, "check", "dns")
    assert (result.returncode, result.stdout) == (4, "dns checks[0]: FAIL: 192.0.2.10: connection refused\n")
    refused = ctl(served.path, "check", "nope")
    assert (refused.returncode, refused.stderr) == (1, "anycastctl: no service 'nope' (configured: dns)\n")


def test_anycastctl_announce(served: Served) -> None:
    served.controller.replies["AnnounceRequest"] = AnnounceReply(("dns",), ("ntp",))
    result = ctl(served.path, "announce", "--all")
    assert result.returncode == 0
    assert (
        result.stdout == "dns: maintenance ended; announced again once its probes pass\nntp: was not in maintenance\n"
    )
    assert ctl(served.path, "withdraw", "dns", "--reason", "x", "--timeout", "-1").returncode == 2


REPLIES: list[tuple[Request, Reply]] = [
    (StatusRequest(), StatusReply({"version": 1, "services": [{"name": "dns"}]})),
    (WithdrawRequest("dns", "x"), WithdrawReply(("dns",))),
    (WithdrawRequest("dns", "x"), WithdrawReply(("dns",), "not saved")),
    (
        WithdrawRequest(None, "x", wait=True),
        WithdrawReply(("dns", "ntp"), None, DrainOutcome(False, "timeout", "route", 3.0, None, "FRR not in step")),
    ),
    (AnnounceRequest(None), AnnounceReply(("dns",), ())),
    (AnnounceRequest(None, "ns1"), AnnounceReply((), ("ns1",), ("ns1",))),
    (
        CheckRequest("dns"),
        CheckReply("dns", (ProbeOutcome(0, True, "ok", "dns", "NOERROR", 0.5, "2026-11-22T10:00:00.000Z", "ns1"),)),
    ),
    (CheckRequest("dns"), CheckReply("dns", (ProbeOutcome(1, False, "timeout", "dns", "no answer", None, "t"),))),
]


@pytest.mark.parametrize(("request_", "reply"), REPLIES)
def test_every_reply_type_survives_the_wire_unchanged(request_: Request, reply: Reply) -> None:
    assert decode_reply(request_, encode_reply(reply)) == reply


def test_optional_reply_fields_are_left_out_while_unset() -> None:
    assert json.loads(encode_reply(WithdrawReply(("dns",)))) == {"ok": True, "withdrawn": ["dns"]}
    outcome = ProbeOutcome(0, True, "ok", "dns", "NOERROR", None, "t")
    assert "server" not in json.loads(encode_reply(CheckReply("dns", (outcome,))))["checks"][0]


@pytest.mark.parametrize(
    ("request_", "line", "message"),
    [
        (StatusRequest(), b"<html>", "not JSON"),
        (StatusRequest(), b"[1]", "reply is not an object"),
        (StatusRequest(), b'{"ok": "yes"}', "reply.ok is 'yes'"),
        (StatusRequest(), b'{"ok": false, "error": "no service"}', "no service"),
        (StatusRequest(), b'{"ok": false}', "anycastd refused the request"),
        (StatusRequest(), b'{"ok": true}', "a status without services"),
        (WithdrawRequest("dns", "x"), b'{"ok": true, "withdrawn": "dns"}', "reply.withdrawn is 'dns'"),
        (WithdrawRequest("dns", "x"), b'{"ok": true, "withdrawn": [1]}', "reply.withdrawn holds a non-name"),
        (
            WithdrawRequest("dns", "x"),
            b'{"ok": true, "withdrawn": ["dns"], "drain": {"drained": 1}}',
            "drain.drained is 1",
        ),
        (
            WithdrawRequest("dns", "x"),
            b'{"ok":true,"withdrawn":[],"drain":{"drained":true,"verdict":"d","method":"m","waited":true}}',
            "drain.waited is True",
        ),
        (AnnounceRequest(None), b'{"ok": true, "announced": []}', "reply.not_in_maintenance is None"),
        (CheckRequest("dns"), b'{"ok": true, "service": "dns", "checks": [{"check": 0}]}', "checks[0].ok is None"),
    ],
)
def test_a_reply_of_the_wrong_shape_is_an_error_that_says_where(request_: Request, line: bytes, message: str) -> None:
    with pytest.raises(ControlError) as info:
        decode_reply(request_, line)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("check", "name"),
    [
        ({"address": "192.0.2.10"}, "192.0.2.10"),  # a status document of 0.1.0: no kind, no transport
        ({"kind": "dns", "transport": "udp", "address": "192.0.2.10"}, "192.0.2.10"),
        ({"kind": "dns", "transport": "dot", "address": "192.0.2.10"}, "192.0.2.10 (dot)"),
        ({"kind": "zone", "transport": None, "address": "192.0.2.10"}, "zone 192.0.2.10"),
        ({"kind": "command", "transport": None, "address": None}, "command"),
    ],
)
def test_status_names_each_kind_of_check(check: dict[str, object], name: str) -> None:
    assert anycastctl._check_name(check) == name


def test_the_routers_table_shows_a_failing_checks_last_probe() -> None:
    ok = {"ok": True, "reason": "fine"}
    bad = {"ok": False, "reason": "stale"}
    assert anycastctl._telling([{"last": ok}, {"last": bad}]) is bad
    assert anycastctl._telling([{"last": None}, {"last": ok}]) is ok
    assert anycastctl._telling([{"last": None}]) is None
