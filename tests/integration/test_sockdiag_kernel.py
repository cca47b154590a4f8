"""sock_diag against this kernel: a listener destroyed and a stuck queue are seen, by an unprivileged user too.

No timing is asserted: bench/triggers.py measures how fast the kernel reports.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import subprocess
import sys

from anycastd.watch.sockdiag import Endpoint, Listeners, SocketInfo, Watcher, parse_messages

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _listener() -> tuple[socket.socket, Endpoint]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, Endpoint(LOOPBACK, sock.getsockname()[1], socket.IPPROTO_UDP)


def test_the_kernel_reports_a_listener_destroyed_and_its_queue_stuck() -> None:
    watcher = Watcher()
    listener, endpoint = _listener()
    other, elsewhere = _listener()
    watcher.listen_to({endpoint.port})  # what the sidecar does: the ports its checks reach
    try:
        info = watcher.lookup(endpoint)
        assert info is not None and info.port == endpoint.port and info.rqueue == 0
        assert watcher.sample([endpoint]) == ([], [])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(3):  # nobody reads: the queue grows, then stays
                client.sendto(b"q" * 40, ("127.0.0.1", endpoint.port))
                assert watcher.sample([endpoint, elsewhere]).stuck in ([], [endpoint])
            assert watcher.sample([endpoint, elsewhere]) == ([endpoint], [])
            listener.recv(100)  # the resolver reads: the queue shrinks, so it is not stuck
            assert watcher.sample([endpoint]) == ([], [])
            listener.recv(100)
            listener.recv(100)  # and reads it all: the queue, stuck before, is empty again
            assert watcher.sample([endpoint]) == ([], [endpoint])
            assert watcher.sample([endpoint]) == ([], [])  # said once
        other.close()  # not on a watched port: the kernel drops its event
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a probe's own socket: dropped too
            probe.connect(("127.0.0.1", endpoint.port))
        listener.close()
        seen: set[Endpoint] = set()
        while endpoint not in seen and select.select([watcher.fileno()], [], [], 5)[0]:
            assert watcher.events is not None
            data = watcher.events.recv(65536)  # each event, raw: only the listener's gets through the filter
            seen |= {
                e
                for info in parse_messages(data, socket.IPPROTO_UDP)
                if isinstance(info, SocketInfo)
                for e in Listeners([endpoint]).served_by(info)
            }
            assert [i.port for i in parse_messages(data, socket.IPPROTO_UDP) if isinstance(i, SocketInfo)] == [
                endpoint.port
            ]
        assert seen == {endpoint}
        assert watcher.lookup(endpoint) is None  # nothing listens there now
    finally:
        listener.close()
        other.close()
        watcher.close()


WATCH_AS_NOBODY = """
import ipaddress, select, socket
from anycastd.watch.sockdiag import Endpoint, Listeners, SocketInfo, Watcher, parse_messages
watcher = Watcher()
endpoint = Endpoint(ipaddress.ip_address("127.0.0.1"), {port}, socket.IPPROTO_UDP)
print("watching", flush=True)
seen = set()
while endpoint not in seen and select.select([watcher.fileno()], [], [], 5)[0]:
    seen |= watcher.destroyed([endpoint])
print("destroyed" if seen else "nothing")
"""


def test_an_unprivileged_watcher_sees_another_users_listener_go() -> None:
    # The sidecar runs as its own user: the resolver's sockets are not its own.
    listener, endpoint = _listener()
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    code = WATCH_AS_NOBODY.format(port=endpoint.port)
    with subprocess.Popen([*argv, "--", sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "watching"
        listener.close()
        assert proc.stdout.read().strip() == "destroyed"
