#!/usr/bin/env python3
"""The least a Python asyncio prober can cost: send one UDP query per address per interval, await the answer.

No health machine, no metrics, no parsing. By default one task per address
and one connected socket each, start times in the same 25 ms steps as
anycastd router once did; with ``--batched``, what anycastd.daemons.engine does
without its bookkeeping: one socket, one timer every 25 ms sending every
query due, one reader draining the answers. bench/router.py runs both
against the same servers to show how much of anycastd router's CPU the
event loop and the kernel take whatever Python does. Prints JSON.

    python bench/asyncio_floor.py [--batched] --seconds 30 ADDRESS...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import time

import dns.message

SLOT = 0.025


class _Answer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def _probe_forever(address: str, wire: bytes, interval: float) -> None:
    loop = asyncio.get_running_loop()
    transport, answer = await loop.create_datagram_endpoint(_Answer, remote_addr=(address, 53))
    await asyncio.sleep(round(random.uniform(0, interval) / SLOT) * SLOT)
    next_at = loop.time()
    while True:
        answer.waiter = loop.create_future()
        timer = loop.call_later(interval * 0.8, answer.waiter.cancel)
        transport.sendto(wire)
        try:
            await answer.waiter
        except asyncio.CancelledError:
            if not answer.waiter.cancelled():
                raise
        timer.cancel()
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def _batched(addresses: list[str], wire: bytes, interval: float) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)

    def drain() -> None:
        while True:
            try:
                sock.recvfrom(512)
            except BlockingIOError:
                return

    loop.add_reader(sock.fileno(), drain)
    steps = max(1, round(interval / SLOT))
    by_step = [addresses[i::steps] for i in range(steps)]
    step = 0
    try:
        while True:
            for address in by_step[step % steps]:
                sock.sendto(wire, (address, 53))
            step += 1
            await asyncio.sleep(SLOT)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


async def _main(addresses: list[str], interval: float, seconds: float, batched: bool) -> dict[str, float]:
    wire = dns.message.make_query("health.example.", "TXT").to_wire()
    if batched:
        tasks = [asyncio.create_task(_batched(addresses, wire, interval))]
    else:
        tasks = [asyncio.create_task(_probe_forever(a, wire, interval)) for a in addresses]
    await asyncio.sleep(3)
    before, t0 = os.times(), time.monotonic()
    await asyncio.sleep(seconds)
    after, wall = os.times(), time.monotonic() - t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = (after.user - before.user + after.system - before.system) / wall * 100
    return {"cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--batched", action="store_true", help="one socket and one timer, as anycastd.daemons.engine")
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.addresses, args.interval, args.seconds, args.batched))))


if __name__ == "__main__":
    main()
