"""The namespace labs hold what their containerlab files say: read back from each namespace's kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anycastd_lab import clab
from anycastd_lab.base import DnsLab
from anycastd_lab.topology import Lab


def kernel(lab: Lab, node: str, *argv: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(lab.exec(lab.ns(node), "ip", "-j", *argv).stdout or "[]")
    return result


def global_addresses(lab: Lab, node: str) -> set[tuple[str, str]]:
    return {
        (link["ifname"], f"{a['local']}/{a['prefixlen']}")
        for link in kernel(lab, node, "addr", "show")
        for a in link.get("addr_info", [])
        if a.get("scope") == "global" or (link["ifname"] == "lo" and a["local"] not in ("127.0.0.1", "::1"))
    }


@pytest.fixture(params=["bgp", "static"])
def built(request: pytest.FixtureRequest) -> DnsLab:
    lab: DnsLab = request.getfixturevalue("lab" if request.param == "bgp" else "router_lab")
    return lab


def test_every_node_is_a_namespace_with_its_file_addresses(built: DnsLab) -> None:
    lab = built.lab
    for node in lab.topology.nodes:
        held = global_addresses(lab, node.name)
        wanted = {(a.interface, str(a.value)) for a in node.addresses}
        # On lo, anycastd (sidecar variant) adds the service addresses itself: the file's are a subset there.
        assert {x for x in held if x[0] != "lo"} == {x for x in wanted if x[0] != "lo"}, node.name
        assert {x for x in wanted if x[0] == "lo"} <= held, node.name


def test_every_link_is_a_veth_pair_between_the_named_interfaces(built: DnsLab) -> None:
    lab = built.lab
    for link in lab.topology.links:
        a = kernel(lab, link.a.node, "-d", "link", "show", "dev", link.a.interface)[0]
        b = kernel(lab, link.b.node, "-d", "link", "show", "dev", link.b.interface)[0]
        assert a["linkinfo"]["info_kind"] == b["linkinfo"]["info_kind"] == "veth"
        assert (a["link_index"], b["link_index"]) == (b["ifindex"], a["ifindex"]), link
        assert "UP" in a["flags"] and "UP" in b["flags"]
    interfaces = {(e.node, e.interface) for link in lab.topology.links for e in (link.a, link.b)}
    for node in lab.topology.nodes:
        present = {x["ifname"] for x in kernel(lab, node.name, "link", "show")} - {"lo"}
        assert present == {i for n, i in interfaces if n == node.name}, node.name


def test_every_route_of_the_file_is_in_the_node_tables(built: DnsLab) -> None:
    lab = built.lab
    for node in lab.topology.nodes:
        for route in node.routes:
            family = "-6" if route.prefix.version == 6 else "-4"
            held = kernel(lab, node.name, family, "route", "show", str(route.prefix))
            [entry] = held
            hops = entry.get("nexthops") or [entry]  # an ECMP route (the POP's servers) lists its hops
            assert sorted(str(h.get("gateway")) for h in hops) == sorted(map(str, route.gateways)), (node.name, route)


def test_the_router_runs_with_the_sysctls_of_the_bound_file(built: DnsLab) -> None:
    lab = built.lab
    path = lab.topology.router.bound("/etc/sysctl.d/90-anycastd-router.conf")
    assert path is not None
    settings = [line.split("=") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert settings
    for key, value in settings:
        held = lab.exec(lab.router, "sysctl", "-n", key.strip()).stdout.strip()
        assert held == value.strip(), key


def test_the_servers_run_the_resolver_their_label_names(built: DnsLab) -> None:
    program = {"bind": "named", "unbound": "unbound"}
    for node in built.lab.topology.servers:
        running = {Path(argv[0].decode()).name for argv in built.lab.commands(node.name).values()}
        assert program[str(node.resolver)] in running, (node.name, running)
        assert program["bind" if node.resolver == "unbound" else "unbound"] not in running, node.name


def test_the_labs_are_built_from_the_reference_files(built: DnsLab) -> None:
    assert built.lab.topology_file in (clab.BGP_TOPOLOGY, clab.STATIC_TOPOLOGY)
    assert built.lab.topology.name == clab.load(built.lab.topology_file).name
