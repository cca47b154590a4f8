"""A hidden primary and its secondaries: the lab of the zone check (``kind: zone``).

The primary is one more BIND, on the router's end of a server's link (the admin network), on port 5353,
serving ``fresh.example.``. It sends a NOTIFY to the secondary on each change (``also-notify``), and allows
transfers: incremental ones (IXFR), since it keeps the differences of each reload in its journal. The
secondary is the server's own BIND with ``fresh.example.`` added as a secondary zone, whose refresh and retry
timers are cut to a second or two (BIND's floor is minutes: the ``min-*-time`` options),
so that a secondary cut off from transfers retries, and catches up, within the test's patience.

``bump(lab, server, serial)`` changes the primary's zone (a new serial; SIGHUP: BIND reloads, keeps its
sockets, and notifies). ``block_transfers(lab, server)`` has the primary refuse transfers (``allow-transfer
{ none; }``, as a wrong ACL or TSIG key does) while its SOA still answers: the secondary hears the NOTIFY,
sees the new serial, and cannot fetch it. (Blocking the primary's port instead would put it in BIND's
unreachable cache for ten minutes: the secondary would not try again within a test.) Nothing here is left
running: ``stop_primary`` ends it.
"""

from __future__ import annotations

import signal
from pathlib import Path

from anycastd_lab.daemons import named_config
from anycastd_lab.topology import Lab, Server, wait_until

ZONE = "fresh.example."
PRIMARY_PORT = 5353


def _key(server: Server) -> str:
    return f"primary-of-{server.name}"


def _dir(lab: Lab, server: Server) -> Path:
    d = lab.workdir / f"primary-{server.name}"
    d.mkdir(exist_ok=True)
    return d


def _zone_text(serial: int) -> str:
    return (
        "$TTL 60\n"
        f"@ IN SOA ns.{ZONE} hostmaster.{ZONE} {serial} 2 1 600 60\n"
        f"@ IN NS ns.{ZONE}\n"
        "ns IN A 192.0.2.53\n"
        f'serial IN TXT "{serial}"\n'
    )


def _primary_config(lab: Lab, server: Server, transfers: str) -> str:
    d = _dir(lab, server)
    zone = d / "fresh.example.db"
    return f"""options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {PRIMARY_PORT} {{ {server.router_v4}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify explicit;
    also-notify {{ {server.v4} port 53; }};
    notify-source {server.router_v4};
    allow-transfer {{ {transfers}; }};
    ixfr-from-differences yes;  # a reloaded zone file becomes a journal: the secondary asks IXFR and gets it
    max-ixfr-ratio unlimited;  # even for a zone this small, where the difference outweighs the zone
}};
controls {{ }};
zone "{ZONE}" {{
    type primary;
    file "{zone}";
}};
"""


def start_primary(lab: Lab, server: Server, serial: int = 1) -> None:
    """The hidden primary of ``fresh.example.`` for ``server``, started and answering."""
    d = _dir(lab, server)
    (d / "fresh.example.db").write_text(_zone_text(serial))
    conf = d / "named.conf"
    conf.write_text(_primary_config(lab, server, "any"))
    lab.spawn(_key(server), lab.router, ["named", "-g", "-n", "1", "-c", str(conf)], d / "named.log")
    wait_until(lambda: f"serial {serial}" in soa_of(lab, server), 10, what="the hidden primary")


def soa_of(lab: Lab, server: Server) -> str:
    out = lab.exec(lab.ns(server.name), "dig", "+short", "+time=1", "+tries=1", "-p", str(PRIMARY_PORT),
                   f"@{server.router_v4}", ZONE, "SOA", check=False).stdout  # fmt: skip
    fields = out.split()
    return f"serial {fields[2]}" if len(fields) == 7 else out


def secondary_config(lab: Lab, server: Server) -> str:
    """The lab's BIND on ``server``, also a secondary of ``fresh.example.`` (timers cut to seconds)."""
    return named_config(lab, server) + secondary_zone(server)


def secondary_zone(server: Server) -> str:
    """BIND's configuration of ``fresh.example.`` as a secondary of ``server``'s hidden primary."""
    return f"""zone "{ZONE}" {{
    type secondary;
    primaries {{ {server.router_v4} port {PRIMARY_PORT}; }};
    min-refresh-time 1;
    max-refresh-time 2;
    min-retry-time 1;
    max-retry-time 2;
}};
"""


def bump(lab: Lab, server: Server, serial: int) -> None:
    d = _dir(lab, server)
    (d / "fresh.example.db").write_text(_zone_text(serial))
    lab.signal(_key(server), signal.SIGHUP)
    wait_until(lambda: soa_of(lab, server) == f"serial {serial}", 10, what=f"the primary at serial {serial}")


def block_transfers(lab: Lab, server: Server, on: bool = True) -> None:
    """Have the primary refuse (``on``) or allow transfers; reloaded with SIGHUP, its sockets kept."""
    (_dir(lab, server) / "named.conf").write_text(_primary_config(lab, server, "none" if on else "any"))
    lab.signal(_key(server), signal.SIGHUP)


def stop_primary(lab: Lab, server: Server) -> None:
    lab.stop(_key(server))
