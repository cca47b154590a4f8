"""A DNS client for the lab: run inside the client namespace, prints JSON.

Every query goes out on a fresh UDP socket, so from a fresh source port: a
new flow for the router's ECMP hash, as real clients are. Queries are paced
at ``--rate`` per second (0: one after another); a query not answered within
``--timeout`` counts as lost. The answer to ``whoami.example. TXT`` names the
server that answered.

    python -m anycastd_lab.client 203.0.113.53 --count 1000 --rate 1000 [--timeline]
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

import dns.exception
import dns.message


@dataclass
class Pending:
    index: int
    sent: float  # seconds since the run started


class Client:
    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.timeout = timeout
        self.sel = selectors.DefaultSelector()
        self.answered: Counter[str] = Counter()
        self.lost = 0
        self.start = time.monotonic()
        self.events: list[tuple[float, str | None]] = []

    def now(self) -> float:
        return time.monotonic() - self.start

    def send(self) -> None:
        index, now = len(self.events), self.now()
        self.events.append((now, None))
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect((self.address, 53))
            sock.send(dns.message.make_query("whoami.example.", "TXT").to_wire())
        except OSError:
            sock.close()
            self.lost += 1
            return
        self.sel.register(sock, selectors.EVENT_READ, Pending(index, now))

    def receive(self, wait: float) -> None:
        for key, _ in self.sel.select(wait):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            pending: Pending = key.data
            try:
                reply = dns.message.from_wire(sock.recv(4096))
                name: str | None = reply.answer[0][0].strings[0].decode()
            except (OSError, dns.exception.DNSException, IndexError, AttributeError):
                name = None
            self._done(sock)
            if name is None:
                self.lost += 1
            else:
                self.answered[name] += 1
                self.events[pending.index] = (pending.sent, name)
        now = self.now()
        for key in list(self.sel.get_map().values()):
            if now - key.data.sent > self.timeout:
                self._done(key.fileobj)  # type: ignore[arg-type]
                self.lost += 1

    def _done(self, sock: socket.socket) -> None:
        self.sel.unregister(sock)
        sock.close()

    @property
    def in_flight(self) -> int:
        return len(self.sel.get_map())


def run(address: str, count: int, rate: float, timeout: float, timeline: bool) -> dict[str, object]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per query in flight
    client = Client(address, timeout)
    while len(client.events) < count or client.in_flight:
        sent = len(client.events)
        due = (client.now() >= sent / rate) if rate > 0 else not client.in_flight
        if sent < count and due:
            client.send()
        else:
            until_next = sent / rate - client.now() if rate > 0 and sent < count else 0.05
            client.receive(min(max(until_next, 0.0), 0.05))
    result: dict[str, object] = {
        "sent": count,
        "answered": dict(client.answered),
        "lost": client.lost,
        "seconds": round(client.now(), 3),
        "start": client.start,  # time.monotonic() when the first query went: the clock is the machine's
    }
    if timeline:
        result["timeline"] = [[round(t, 4), who] for t, who in client.events]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="queries per second; 0: one after another")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--timeline", action="store_true", help="also print when each query was sent and who answered")
    args = parser.parse_args(argv)
    json.dump(run(args.address, args.count, args.rate, args.timeout, args.timeline), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
