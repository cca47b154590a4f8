"""BGP attributes per service, on real FRR and ExaBGP: what the router's BGP table holds, and the
preference it gives (a prepended server is used only when the others are gone)."""

from __future__ import annotations

import json
import time
from typing import Any

from anycastd_lab import daemons
from anycastd_lab.bgp import BgpLab
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Server

STEER = """\
    bgp:
      communities: ["64500:200", "64500:7"]
      large_communities: ["64500:1:2"]
      med: 200
      as_path_prepend: 3
"""


def path_from(lab: BgpLab, family: str, prefix: str, peer: str) -> dict[str, Any] | None:
    """The router's BGP path to ``prefix`` learnt from ``peer``, as vtysh's JSON gives it; None if none."""
    table = json.loads(lab.vtysh(f"show bgp {family} unicast {prefix} json") or "{}")
    for path in table.get("paths", []):
        if path.get("peer", {}).get("peerId") == peer:
            return path  # type: ignore[no-any-return]
    return None


def wait_for_path(lab: BgpLab, family: str, prefix: str, peer: str, prepended: bool) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    path = None
    while time.monotonic() < deadline:
        path = path_from(lab, family, prefix, peer)
        if path is not None and (path["aspath"]["length"] > 1) is prepended:
            return path
        time.sleep(0.1)
    raise AssertionError(f"no {'prepended ' if prepended else ''}path to {prefix} from {peer}: {path}")


def test_the_routers_bgp_table_holds_each_attribute_and_prefers_the_shorter_path(lab: BgpLab) -> None:
    s1, others = lab.servers[0], lab.servers[1:]
    assert s1.asn is not None
    lab.kill_anycastd(s1)
    lab.start_anycastd(s1, daemons.anycastd_config(lab.lab, s1, service=STEER))
    for family, prefix, peer in (("ipv4", SERVICE_V4, s1.v4), ("ipv6", SERVICE_V6, s1.v6)):
        path = wait_for_path(lab, family, prefix.split("/")[0], str(peer), prepended=True)
        assert path["aspath"]["string"] == " ".join([str(s1.asn)] * 4)  # its own AS, and 3 more
        assert set(path["community"]["string"].split()) == {"64500:200", "64500:7"}  # in numeric order
        assert path["largeCommunity"]["string"] == "64500:1:2"
        assert path["metric"] == 200  # the MED
        assert not path.get("multipath") and not path.get("bestpath", {}).get("overall")
    # preferred less: the kernel's FIB holds the two other servers' paths only ...
    lab.wait_server(s1, present=False)
    assert lab.server_paths() == frozenset(s.name for s in others)
    # ... until they are gone: then the prepended server carries the service alone
    for server in others:
        lab.kill_resolver(server)
    lab.wait_server(s1, present=True, timeout=10)
    assert lab.server_paths() == frozenset({s1.name})


def test_an_unsteered_path_has_only_the_local_as(lab: BgpLab) -> None:
    server: Server = lab.servers[1]
    path = wait_for_path(lab, "ipv4", SERVICE_V4.split("/")[0], str(server.v4), prepended=False)
    assert path["aspath"]["string"] == str(server.asn)
    assert "largeCommunity" not in path and "metric" not in path
