"""`anycastctl`: talk to a running anycastd over its control socket.

Global options (--json, --socket) go before or after the command.

Exit codes: 0 done (for status: every service announced; anycastd router:
every server routed), 1 error (anycastd said no), 2 usage, 3 withdraw --wait
timed out (withdrawn, but queries still arrive), 4 check: a probe failed,
5 status: a service is withdrawn (or a server not routed), 6 status: degraded
(a failing service kept announced, a BGP or BFD session or FRR not in step, no healthy
server), 7 no anycastd answers on the socket.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anycastd import __version__
from anycastd.config.schema import CONTROL_SOCKET, DEFAULT_RUNTIME_DIR
from anycastd.control.client import call
from anycastd.control.protocol import (
    AnnounceReply,
    AnnounceRequest,
    CheckReply,
    CheckRequest,
    ControlError,
    Reply,
    Request,
    StatusReply,
    StatusRequest,
    Unreachable,
    WithdrawRequest,
    plain,
    reply_json,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMED_OUT, EXIT_CHECK_FAILED = 0, 1, 2, 3, 4
EXIT_WITHDRAWN, EXIT_DEGRADED, EXIT_NO_DAEMON = 5, 6, 7
#: ``status``'s exit codes when anycastd answered: all announced, something withdrawn, degraded.
ANSWERED = (EXIT_OK, EXIT_WITHDRAWN, EXIT_DEGRADED)
DEFAULT_SOCKET = DEFAULT_RUNTIME_DIR / CONTROL_SOCKET
REPLY_TIMEOUT = 10.0


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--json and --socket, on the top parser (with their defaults) and on each command's (without:
    given after the command, they override; not given, they leave what came before)."""
    socket_default = Path(os.environ.get("ANYCASTD_SOCKET", str(DEFAULT_SOCKET)))
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="print the stable JSON form (see docs/operations.md)",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        default=socket_default if defaults else argparse.SUPPRESS,
        help=f"anycastd's control socket (default: $ANYCASTD_SOCKET or {DEFAULT_SOCKET})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anycastctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"anycastctl {__version__}")
    _global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _global_options(p, defaults=False)
        return p

    status = command("status", "state, routes, probes and BGP sessions; the exit code says whether all is announced")
    status.add_argument("service", nargs="?")
    withdraw = command("withdraw", "maintenance: withdraw now, and stay withdrawn until announce")
    _target(withdraw)
    withdraw.add_argument("--reason", required=True, help="why, for the log and for status (kept across restarts)")
    withdraw.add_argument("--wait", action="store_true", help="return once no query has arrived for drain.quiet")
    withdraw.add_argument("--timeout", type=float, help="give up waiting after this many seconds (drain.timeout)")
    withdraw.add_argument(
        "--soft",
        action="store_true",
        help="keep the path, tagged GRACEFUL_SHUTDOWN, while the probes pass: no query comes while another "
        "server is healthy, and draining every server keeps the service (the sidecar only)",
    )
    announce = command("announce", "end maintenance: announced again once the probes pass")
    _target(announce)
    check = command("check", "probe now and print the results (does not change any state)")
    check.add_argument("service")
    return parser


def _target(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("service", nargs="?")
    group.add_argument("--all", action="store_true", help="every service (anycastd router: every server)")
    group.add_argument("--server", metavar="NAME", help="anycastd router: this server, in every service it serves")


def _request(args: argparse.Namespace) -> Request:
    if args.command == "status":
        return StatusRequest(args.service)
    if args.command == "withdraw":
        user = os.environ.get("SUDO_USER", "")
        return WithdrawRequest(args.service, args.reason, user, args.wait, args.timeout, args.server, args.soft)
    if args.command == "announce":
        return AnnounceRequest(args.service, args.server)
    return CheckRequest(args.service)


def _ago(iso: str | None) -> str:
    return iso.replace("T", " ")[:19] if iso else "-"


def _probe(last: dict[str, Any] | None) -> str:
    if last is None:
        return "no probe yet"
    latency = f" {last['latency_ms']:.1f} ms" if last["latency_ms"] is not None else ""
    return f"{'ok' if last['ok'] else 'FAIL'}{latency}: {last['reason']}"


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_router_status(reply: dict[str, Any]) -> None:
    rows = [("SERVICE", "SERVER", "STATE", "HEALTHY", "ROUTED", "SINCE (UTC)", "LAST PROBE")]
    for s in reply["services"]:
        for v in s["servers"]:
            last = _telling(v["checks"])
            rows.append(
                (s["name"], v["name"], v["state"], "yes" if v["healthy"] else "no", "yes" if v["routed"] else "no",
                 _ago(v["since"]), _probe(last))
            )  # fmt: skip
    _table(rows)
    for s in reply["services"]:
        print(f"\n{s['name']}: {', '.join(s['prefixes'])} via {', '.join(s['routed_via']) or 'NO SERVER'}")
        if not s["decided"]:
            print("  waiting for every server's first verdict; FRR's routes are kept as they are")
        if s["degraded"]:
            print(f"  DEGRADED: {s['degraded']}")
        for v in s["servers"]:
            m = v["maintenance"]
            if m:
                print(f"  {v['name']}: maintenance: {m['reason']} (by {m['who']}, since {_ago(m['since'])})")
            _print_damping(f"  {v['name']}: ", v.get("damping"))
            for t in v["transitions"][-2:]:
                print(f"  {_ago(t['at'])}  {t['name']}: {t['from']} -> {t['to']} ({t['reason']})")
    f = reply["frr"]
    sync = "in step" if f["in_sync"] else f"NOT in step: {f['problem']}"
    via = "VTY session" if f.get("backend") == "vty" else "vtysh"
    print(f"\nFRR (tag {f['tag']}): {sync}; last sync {_ago(f['last_sync'])}, {f['calls']} call(s) through {via}")
    if f["conflicts"]:
        print(f"  left alone (configured by hand without tag {f['tag']}): {', '.join(f['conflicts'])}")
    if reply.get("problem"):
        print(f"\nPROBLEM: {reply['problem']}")


def _telling(checks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last probe that says most of a server: the first failing check's, else the first check's."""
    lasts = [c["last"] for c in checks if c["last"]]
    return next((last for last in lasts if not last["ok"]), lasts[0] if lasts else None)


def _check_name(c: dict[str, Any]) -> str:
    """A check as status lines name it: its address, and its kind or transport unless DNS over UDP."""
    kind, transport, address = c.get("kind", "dns"), c.get("transport"), c.get("address")
    if kind == "dns":
        return f"{address} ({transport})" if transport not in (None, "udp") else str(address)
    return f"{kind} {address}" if address else str(kind)


def _print_damping(indent: str, d: dict[str, Any] | None) -> None:
    if d and d["suppressed"]:
        print(
            f"{indent}SUPPRESSED until {_ago(d['suppressed_until'])} by flap damping: penalty {d['penalty']}, "
            f"announced again below {d['reuse']:g} (`anycastctl announce` clears it)"
        )


def print_status(reply: dict[str, Any]) -> None:
    if reply.get("mode") == "router":
        print_router_status(reply)
        return
    rows = [("SERVICE", "STATE", "ANNOUNCED", "SINCE (UTC)")]
    for s in reply["services"]:
        rows.append((s["name"], s["state"], "yes" if s["announced"] else "no", _ago(s["since"])))
    _table(rows)
    for s in reply["services"]:
        print(f"\n{s['name']}:")
        prefixes = (f"{p['prefix']} {'announced' if p['announced'] else 'withdrawn'}" for p in s["prefixes"])
        print("  prefixes: " + ", ".join(prefixes))
        m = s["maintenance"]
        if m:
            kind = "soft maintenance" if m.get("soft") else "maintenance"
            print(f"  {kind}: {m['reason']} (by {m['who']}, since {_ago(m['since'])})")
        if s.get("path") == "graceful-shutdown":
            why = (
                "soft-drained; used only while no other path is left"
                if m
                else "failing; used only while no path is healthy"
            )
            print(f"  path: kept, tagged GRACEFUL_SHUTDOWN (65535:0): {why}")
        elif m and m.get("soft"):
            print("  path: withdrawn: soft-drained, but its probes fail")
        w = s.get("weight")
        if w:
            why = w["why"] if w["value"] == w["configured"] else f"{w['why']}; configured {w['configured']}"
            print(f"  weight: {w['value']} ({why}; link bandwidth {w['value']} Mbit/s)")
        _print_damping("  ", s.get("damping"))
        if s.get("require", len(s["checks"])) < len(s["checks"]):
            print(f"  healthy while {s['require']} of its {len(s['checks'])} checks pass")
        for c in s["checks"]:
            print(
                f"  checks[{c['index']}] {_check_name(c)}: {c['state']}, {c['probes']} probes, {c['failures']} failed;"
                f" last {_probe(c['last'])}"
            )
            if c.get("detection"):
                why = f" ({c['detection_note']})" if c.get("detection_note") else ""
                print(f"    detection: {c['detection']}{why}; {c.get('woken', 0)} probes woken by an event")
        for t in s["transitions"][-5:]:
            print(f"  {_ago(t['at'])}  {t['name']}: {t['from']} -> {t['to']} ({t['reason']})")
    sessions = ", ".join(f"{n} {st}" for n, st in reply["bgp"].items()) or "none"
    e = reply["exabgp"]
    print(
        f"\nBGP: {sessions}; ExaBGP pid {e.get('pid') or '-'} {e.get('state', '-')}, last answer "
        f"{_ago(e.get('last_answer'))}, {e.get('restarts', 0)} restart(s)"
    )
    if e.get("problem"):
        print(f"ExaBGP's last problem: {e['problem']}")
    _print_bfd(reply.get("bfd"))
    rp = reply.get("return_path")
    if rp:
        routes = "; ".join(f"{p} via {', '.join(v) if v else '(not set)'}" for p, v in rp["routes"].items())
        problem = f"; PROBLEM: {rp['problem']}" if rp["problem"] else ""
        print(f"return path (metric {rp['metric']}): {routes}{problem}")
    if reply.get("problem"):
        print(f"\nPROBLEM: {reply['problem']}")


def _print_bfd(b: dict[str, Any] | None) -> None:
    if not b:
        return
    sessions = ", ".join(
        f"{n} {v['state']} ({v['interval_ms']} ms x {v['multiplier']}{', multihop' if v.get('multihop') else ''})"
        for n, v in b["sessions"].items()
    )
    print(f"BFD: {sessions}; bfdd pid {b.get('pid') or '-'} {b.get('state', '-')}, {b.get('restarts', 0)} restart(s)")
    if b.get("problem"):
        print(f"bfdd's last problem: {b['problem']}")
    for neighbor, v in b["sessions"].items():
        d = v.get("damping") or {}
        if d.get("held"):
            print(
                f"BFD with {neighbor} keeps failing: HELD BACK by flap damping (penalty {d['penalty']}), nothing "
                f"announced to it for about {d['reuse_at_in']} s more"
            )


def status_code(doc: dict[str, Any]) -> int:
    """The exit code of ``status`` for its document: EXIT_OK, EXIT_WITHDRAWN or EXIT_DEGRADED (the worst)."""
    if doc.get("mode") == "router":
        f = doc["frr"]
        degraded = bool(doc.get("problem")) or not f["in_sync"] or f.get("kernel_agrees") is False
        withdrawn = False
        for s in doc["services"]:
            degraded = degraded or bool(s["degraded"]) or (s["decided"] and not s["routed_via"])
            withdrawn = withdrawn or not s["decided"] or any(not v["routed"] for v in s["servers"])
    else:
        sessions = doc["bgp"].values()
        degraded = bool(doc.get("problem")) or not sessions or any(state != "up" for state in sessions)
        bfd = (doc.get("bfd") or {}).get("sessions", {})
        degraded = degraded or any(v["state"] != "up" for v in bfd.values())
        withdrawn = False
        for s in doc["services"]:
            degraded = degraded or s.get("path") == "graceful-shutdown"
            degraded = degraded or (s.get("weight") or {}).get("level") in ("degraded", "held")
            withdrawn = withdrawn or not s["announced"]
            degraded = degraded or (s["announced"] and not all(p["announced"] for p in s["prefixes"]))
    return EXIT_DEGRADED if degraded else EXIT_WITHDRAWN if withdrawn else EXIT_OK


def _print(args: argparse.Namespace, reply: Reply) -> int:
    if args.json:
        json.dump(reply_json(reply), sys.stdout, indent=2)
        print()
    if isinstance(reply, StatusReply):
        if not args.json:
            print_status(reply.document)
        return status_code(reply.document)
    if isinstance(reply, CheckReply):
        if not args.json:
            for c in reply.checks:
                server = f" {c.server}" if c.server is not None else ""
                print(f"{reply.service}{server} checks[{c.check}]: {_probe(plain(c))}")
        return EXIT_CHECK_FAILED if any(not c.ok for c in reply.checks) else EXIT_OK
    if isinstance(reply, AnnounceReply):
        if not args.json:
            for name in reply.announced:
                print(f"{name}: maintenance ended; announced again once its probes pass")
            for name in reply.not_in_maintenance:
                print(f"{name}: was not in maintenance")
            for name in reply.damping_cleared:
                print(f"{name}: flap penalty cleared; announced again once its probes pass")
        return EXIT_OK
    if reply.warning:
        print(f"anycastctl: warning: {reply.warning}", file=sys.stderr)
    if not args.json:
        for name in reply.withdrawn:
            if args.soft:
                print(f"{name}: soft-drained for maintenance (path kept, tagged GRACEFUL_SHUTDOWN)")
            else:
                print(f"{name}: {'drained' if args.server else 'withdrawn'} for maintenance")
    drain = reply.drain
    if drain is None:
        return EXIT_OK
    if not args.json:
        if drain.method == "timer":
            print(f"anycastctl: {drain.note}", file=sys.stderr)
        verdict = "drained" if drain.drained else "NOT drained"
        packets = f", {drain.packets} packets after the withdrawal" if drain.packets is not None else ""
        print(f"{verdict} after {drain.waited:.2f} s ({drain.method}: {drain.note}{packets})")
    return EXIT_OK if drain.drained else EXIT_TIMED_OUT


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "timeout", None) is not None and not 0 < args.timeout <= 3600:
        print("anycastctl: --timeout must be between 0 and 3600 seconds", file=sys.stderr)
        return EXIT_USAGE
    if args.command in ("withdraw", "announce") and (args.all or args.server):
        args.service = None
    request = _request(args)
    timeout = REPLY_TIMEOUT
    if isinstance(request, WithdrawRequest) and request.wait:
        timeout += request.timeout or 3600.0  # the daemon ends the wait; this only guards against a hung daemon
    try:
        reply = call(args.socket, request, timeout)
    except ControlError as exc:  # Unreachable too
        message = str(exc) + version_hint(str(exc))
        if args.json:  # a script reading stdout gets an answer it can parse, as the daemon's own errors
            print(json.dumps({"ok": False, "error": message}))
        print(f"anycastctl: {message}", file=sys.stderr)
        return EXIT_NO_DAEMON if isinstance(exc, Unreachable) else EXIT_ERROR
    if isinstance(reply, StatusReply) and not args.json:
        running = reply.document.get("anycastd")
        if running != __version__:  # absent: a daemon older than the field (0.1.0 has it)
            print(
                f"anycastctl: note: this anycastctl is {__version__}, the running anycastd is "
                f"{running or 'older than 0.1.0'}: restart anycastd to run the installed version",
                file=sys.stderr,
            )
    try:
        return _print(args, reply)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a status of a shape this one cannot show
        print(
            f"anycastctl: cannot show this status ({type(exc).__name__}: {exc}); "
            f"`anycastctl status --json` prints it whole{version_hint('unexpected reply')}",
            file=sys.stderr,
        )
        return EXIT_ERROR


#: What a daemon of another version says of a request it cannot read, and what this anycastctl says of a
#: reply it cannot read (anycastd.control.protocol).
_MISMATCH = ("unknown command", "unknown field", "unexpected reply", "not JSON", "a request is a JSON object")


def version_hint(error: str) -> str:
    """A sentence to add to ``error`` when it looks like anycastctl and anycastd of different versions
    (an upgrade installed, the daemon not restarted): the fix is a restart, not a changed command line."""
    if not any(words in error for words in _MISMATCH):
        return ""
    return (
        f" (this anycastctl is {__version__}; an anycastd of another version may not know this request: "
        "`anycastd --version` shows the installed one, `systemctl restart anycastd` runs it)"
    )


if __name__ == "__main__":
    sys.exit(main())
