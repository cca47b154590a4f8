"""A time-boxed mutational fuzz of every parser of untrusted input; `make fuzz` runs it (and `make test`).

    python -m tests.fuzz --seconds 60 [--seed N]

Seeds are the valid example configurations, the hostile corpus
(tests/hostile/config), control requests, daemon replies, state files and bfdd's answers. Each round mutates
one seed (flip or insert bytes, splice lines, insert a YAML special) and
feeds it to its parser. The only acceptable outcomes are a value or the
parser's own error (ConfigError, ControlError, StateError, BfdError). Anything else,
or one input taking over HANG seconds, or the process growing past MAX_RSS,
fails the run and saves the input under /tmp/anycastd-fuzz-*/ with the seed
that reproduces it.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from anycastd.announce import bfdd_text
from anycastd.config import router as router_config
from anycastd.config import sidecar as config
from anycastd.control import protocol as control
from anycastd.daemons import state
from anycastd.errors import ConfigError

ROOT = Path(__file__).parents[2]
HANG = 5.0
MAX_RSS_MIB = 512
SPECIALS = [
    b".nan",
    b".inf",
    b"1.0e+400",
    b"!!int",
    b"!!python/object:os.system",
    b"!x",
    b"&a",
    b"*a",
    b"<<: *a",
    b"[",
    b"{",
    b"'",
    b'"',
    b"\\",
    b"\x00",
    b"\xff",
    b"\t",
    b"\r\n",
    b"---\n",
    b"? ",
    b"=",
    b"~",
    b"9" * 5000,
    b": ",
    b"- ",
    b"#",
    b"%YAML 1.1\n",
    b"\xef\xbb\xbf",
    b"&b [*b]",
    b"1:2:3",
    b"0x",
    b'"\\u0022"',
    b"NaN",
    b"1e999",
    b"[" * 3000,
    b'{"a":' * 3000,
]


def _seeds() -> dict[str, list[bytes]]:
    configs = [p.read_bytes() for p in (ROOT / "examples").glob("*.yaml")]
    configs += [p.read_bytes() for p in (ROOT / "tests" / "hostile" / "config").glob("*.yaml")]
    requests = [
        b'{"command":"status"}',
        b'{"command":"withdraw","service":"dns","reason":"maintenance","wait":true,"timeout":30}',
        b'{"command":"announce","server":"ns1"}',
        b'{"command":"check","service":"dns"}',
    ]
    states = [
        state.encode({"dns": state.Maintenance("kernel upgrade", "alice", 1.7e9)}).encode(),
        b'{"version": 1, "drained": {}}',
        b'{"version": 1, "drained": {"dns": {"reason": "x", "who": "root", "since": 1' + b"0" * 400 + b"}}}",
    ]
    bfdd_answers = [
        b'[{"multihop":false,"peer":"192.0.2.9","local":"192.0.2.10","vrf":"default","id":1,"remote-id":2,'
        b'"status":"up","uptime":12,"diagnostic":"ok","remote-diagnostic":"ok","receive-interval":100,'
        b'"transmit-interval":100,"detect-multiplier":3,"remote-receive-interval":100,'
        b'"remote-transmit-interval":100,"remote-detect-multiplier":3}]',
        b'[{"peer":"2001:db8:0:1::1","status":"down","downtime":4,"diagnostic":"control detection time expired"}]',
        b"[]",
        b'{"op":"status","ipv6":false,"multihop":false,"peer-address":"192.0.2.9","local-address":"192.0.2.10",'
        b'"id":1,"remote-id":1,"state":"up","uptime":3}',
    ]
    replies = [
        b'{"ok":true,"version":1,"services":[{"name":"dns"}]}',
        b'{"ok":true,"withdrawn":["dns"],"warning":"w","drain":{"drained":true,"verdict":"drained",'
        b'"method":"nftables","waited":1.5,"packets":3,"note":"quiet"}}',
        b'{"ok":true,"announced":["ns1"],"not_in_maintenance":[]}',
        b'{"ok":true,"service":"dns","checks":[{"check":0,"ok":true,"outcome":"ok","kind":"dns",'
        b'"reason":"NOERROR","latency_ms":0.4,"at":"2026-12-03T10:00:00.000Z","server":"ns1"}]}',
        b'{"ok":false,"error":"no service"}',
    ]
    return {
        "config": configs,
        "router": configs,
        "control": requests,
        "reply": replies,
        "state": states,
        "bfdd": bfdd_answers,
    }


def _parsers(tmp: Path) -> dict[str, Callable[[bytes], object]]:
    def via_file(loader: Callable[[Path], object]) -> Callable[[bytes], object]:
        def run(data: bytes) -> object:
            path = tmp / "input.yaml"
            path.write_bytes(data)
            return loader(path)

        return run

    def state_file(data: bytes) -> object:
        (tmp / state.FILE_NAME).write_bytes(data)
        return state.FileStore(tmp).load()

    def reply(data: bytes) -> object:
        """What anycastctl makes of a daemon's reply, for each request it may have sent."""
        return [control.decode_reply(r, data) for r in REQUESTS]

    return {
        "config": via_file(config.load),
        "router": via_file(router_config.load_router),
        "control": control.decode,
        "reply": reply,
        "state": state_file,
        # its VTY answer (show bfd peers json) and a control-socket notification
        "bfdd": lambda data: (
            bfdd_text.parse_peers(data.decode("utf-8", errors="replace")),
            bfdd_text.parse_notification(4, data),
        ),
    }


EXPECTED_ERRORS = (ConfigError, control.ControlError, state.StateError, bfdd_text.BfdError)
REQUESTS = (
    control.StatusRequest(),
    control.WithdrawRequest("dns", "x"),
    control.AnnounceRequest(None),
    control.CheckRequest("dns"),
)


def _mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[at:at] = rng.choice(SPECIALS)
        elif op == 2 and buf:
            del buf[at : at + rng.randint(1, 32)]
        elif op == 3:
            other = rng.choice(others)
            start = rng.randint(0, len(other))
            buf[at:at] = other[start : start + rng.randint(1, 200)]
        elif op == 4:
            lines = bytes(buf).split(b"\n")
            rng.shuffle(lines) if rng.random() < 0.1 else lines.insert(rng.randint(0, len(lines)), rng.choice(lines))
            buf = bytearray(b"\n".join(lines))
        else:
            buf[at:at] = b" " * rng.randint(1, 8)
    return bytes(buf)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    seeds = _seeds()
    with tempfile.TemporaryDirectory(prefix="anycastd-fuzz-run-") as tmp:
        parsers = _parsers(Path(tmp))
        counts = dict.fromkeys(parsers, 0)
        slowest = (0.0, "")
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            target = rng.choice(list(parsers))
            data = _mutate(rng, rng.choice(seeds[target]), seeds[target])
            started = time.monotonic()
            try:
                parsers[target](data)
            except EXPECTED_ERRORS:
                pass
            except Exception:
                return _failed(seed, target, data, traceback.format_exc())
            took = time.monotonic() - started
            slowest = max(slowest, (took, target))
            if took > HANG:
                return _failed(seed, target, data, f"took {took:.1f} s (a hang: the bound is {HANG:g} s)")
            counts[target] += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(counts.values())
    print(
        f"fuzz: seed {seed}, {total} inputs in {args.seconds:g} s ({', '.join(f'{k} {v}' for k, v in counts.items())})"
    )
    print(f"fuzz: slowest input {slowest[0] * 1000:.0f} ms ({slowest[1]}), peak RSS {rss:.0f} MiB; no failure")
    if rss > MAX_RSS_MIB:
        print(f"fuzz: peak RSS {rss:.0f} MiB is over {MAX_RSS_MIB} MiB", file=sys.stderr)
        return 1
    return 0


def _failed(seed: int, target: str, data: bytes, why: str) -> int:
    out = Path(tempfile.mkdtemp(prefix="anycastd-fuzz-"))
    (out / f"{target}.input").write_bytes(data)
    print(f"fuzz: FAILED on a {target} input (seed {seed}; saved in {out}):\n{why}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
