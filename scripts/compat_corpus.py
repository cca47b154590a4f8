"""Write tests/compat/<version>/: what this version of anycastd puts on the wire and on disk, kept for ever.

- requests.jsonl: one control request per line, as this version's anycastctl sends them;
- replies.jsonl: {"request": ..., "reply": ...} per line, as this version's daemons answer (both variants);
- maintenance.json, router-maintenance.json: the state files (drains) as this version writes them.

tests/unit/test_compat.py reads every version's corpus with today's code: a newer daemon must take an older
anycastctl's requests and an older version's state files, and a newer anycastctl must show an older daemon's
replies (or refuse them with words, never a traceback). `make release` writes the corpus of the version it
tags when there is none (docs/packaging.md, "Versions").

Usage: python scripts/compat_corpus.py [VERSION]   (default: anycastd's own)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anycastd import __version__  # noqa: E402
from anycastd.control.protocol import (  # noqa: E402
    AnnounceRequest,
    CheckRequest,
    ControlError,
    ErrorReply,
    Request,
    StatusRequest,
    WithdrawRequest,
    encode,
    encode_reply,
)
from anycastd.daemons.state import Maintenance  # noqa: E402
from anycastd.daemons.state import encode as encode_state  # noqa: E402
from anycastd.peer import Peer  # noqa: E402
from tests.helpers import bring_up, hard, make_router, make_sidecar, rounds  # noqa: E402

OPERATOR = Peer(pid=4242, uid=1000, gid=1000)

SIDECAR_REQUESTS: list[Request] = [
    StatusRequest(),
    StatusRequest("dns"),
    CheckRequest("dns"),
    WithdrawRequest("dns", "kernel upgrade", "alice"),
    WithdrawRequest(None, "whole host", "", True, 0.5),
    AnnounceRequest("dns"),
    AnnounceRequest(None),
    CheckRequest("nope"),  # an error reply
]
ROUTER_REQUESTS: list[Request] = [
    StatusRequest(),
    WithdrawRequest(None, "disk swap", "bob", server="ns1"),
    StatusRequest(),  # with ns1 drained and ns3 failed
    AnnounceRequest(None, server="ns1"),
    WithdrawRequest("dns", "no server named"),  # an error reply: the router drains servers
]


async def replies() -> list[dict[str, str]]:
    lines = []
    sidecar, _, _, fake = make_sidecar()
    await bring_up(sidecar, "dns")
    for request in SIDECAR_REQUESTS:
        try:
            reply = encode_reply(await sidecar.handle(request, OPERATOR))
        except ControlError as exc:
            reply = encode_reply(ErrorReply(str(exc)))
        lines.append({"variant": "sidecar", "request": encode(request).decode(), "reply": reply.decode()})
        await fake.sleep(1.0)
    router, _, prober, _ = make_router()
    await rounds(router, prober, 3)
    for request in ROUTER_REQUESTS:
        if request is ROUTER_REQUESTS[2]:
            prober.now["ns3"] = hard
            await rounds(router, prober, 3)
        try:
            reply = encode_reply(await router.handle(request, OPERATOR))
        except ControlError as exc:
            reply = encode_reply(ErrorReply(str(exc)))
        lines.append({"variant": "router", "request": encode(request).decode(), "reply": reply.decode()})
    return lines


def write(version: str) -> Path:
    out = ROOT / "tests" / "compat" / version
    out.mkdir(parents=True, exist_ok=True)
    requests = {encode(r).decode() for r in SIDECAR_REQUESTS + ROUTER_REQUESTS}
    (out / "requests.jsonl").write_text("".join(sorted(requests)))
    (out / "replies.jsonl").write_text(
        "".join(json.dumps(line, sort_keys=True) + "\n" for line in asyncio.run(replies()))
    )
    since = 1795000000.0
    (out / "maintenance.json").write_text(
        encode_state({"dns": Maintenance("kernel upgrade", "alice (uid 1000)", since)})
    )
    (out / "router-maintenance.json").write_text(
        encode_state(
            {"ns1": Maintenance("disk swap", "bob (uid 1000)", since), "ns2": Maintenance("x", "root", since + 1.5)}
        )
    )
    return out


def main(argv: list[str]) -> int:
    version = argv[1] if len(argv) > 1 else __version__
    print(write(version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
