"""containerlab/ is the one description of the reference topology: its structure, and that the lab agrees with it.

The namespace lab is built from these files (tests/integration/test_topology_lab.py
checks what the kernel then holds); here, without root: the files are valid, a
broken file is refused with the key to fix, and every setting the lab generates
for a daemon matches the file the container gets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from anycastd.config import router as router_config
from anycastd.config import sidecar as config
from anycastd_lab import clab, daemons
from anycastd_lab.topology import Lab

TOPOLOGIES = [clab.BGP_TOPOLOGY, clab.STATIC_TOPOLOGY]


def lab_for(path: Path, tmp_path: Path) -> Lab:
    """A Lab that is not built: enough to render the configuration the lab would give its daemons."""
    return Lab(path, workdir=tmp_path)


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_the_reference_topologies_are_valid(path: Path) -> None:
    topology = clab.load(path)
    assert [n.role for n in topology.nodes] == ["router", "server", "server", "server", "client"]
    assert [n.resolver for n in topology.servers] == ["bind", "unbound", "unbound"]
    assert {n.kind for n in topology.nodes} == {"linux"}
    for node in topology.nodes:
        for bind in node.binds:
            assert bind.source.is_file()
            assert clab.ROOT in bind.source.parents  # the repository's own files, nothing from elsewhere


def test_the_pop_is_an_edge_two_tors_and_dual_homed_servers() -> None:
    pop = clab.load(clab.POP_TOPOLOGY)
    assert [n.name for n in pop.routers] == ["e1", "r1", "r2"] and pop.router.name == "e1"
    assert [n.resolver for n in pop.servers] == ["bind", "unbound", "unbound"]
    for server in pop.servers:
        assert [theirs.node for _, theirs in pop.uplinks(server.name)] == ["r1", "r2"]
        [v4, v6] = server.routes  # the natural return path: ECMP over both ToRs
        assert len(v4.gateways) == len(v6.gateways) == 2
    for router in pop.routers:
        assert router.bound("/etc/frr/frr.conf") == clab.ROOT / "frr" / "pop" / f"{router.name}.conf"


def test_the_routers_run_the_frr_files_users_copy() -> None:
    for path, frr in ((clab.BGP_TOPOLOGY, "bgp/frr.conf"), (clab.STATIC_TOPOLOGY, "static/frr.conf")):
        router = clab.load(path).router
        assert router.bound("/etc/frr/frr.conf") == clab.ROOT / "frr" / frr
        assert (
            router.bound("/etc/sysctl.d/90-anycastd-router.conf") == clab.ROOT / "frr/sysctl.d/90-anycastd-router.conf"
        )


def test_the_two_variants_share_nodes_links_and_addresses() -> None:
    """They differ only in what runs: the router-side servers carry the service addresses on lo themselves."""
    bgp, static = clab.load(clab.BGP_TOPOLOGY), clab.load(clab.STATIC_TOPOLOGY)
    assert bgp.links == static.links
    assert [n.name for n in bgp.nodes] == [n.name for n in static.nodes]
    for a, b in zip(bgp.nodes, static.nodes, strict=True):
        assert a.routes == b.routes
        assert [x for x in b.addresses if x.interface != "lo"] == list(a.addresses)
    for server in static.servers:
        assert {str(a.value) for a in server.addresses if a.interface == "lo"} == {
            "203.0.113.53/32",
            "2001:db8::53/128",
        }
        assert server.bound(clab.ANYCASTD_CONFIG) is None
    for server in bgp.servers:
        assert server.bound(clab.ANYCASTD_CONFIG) is not None


# a broken file is refused, saying what to fix ------------------------------------------------------------


def mutated(change: str) -> dict[str, object]:
    raw: dict[str, object] = yaml.safe_load(clab.BGP_TOPOLOGY.read_text())
    exec(change, {"t": raw})
    return raw


BROKEN = [
    ("t['topolgy'] = t.pop('topology')", "topolgy: unknown top-level key"),
    ("t['topology']['nodes']['s2']['kind'] = 'docker'", "topology.nodes.s2.kind: must be one of linux, got 'docker'"),
    (
        "t['topology']['nodes']['s2']['image'] = 'anycastd-server'",
        "topology.nodes.s2.image: must be an image with a tag",
    ),
    ("t['topology']['nodes']['s2']['imgae'] = 'x:1'", "topology.nodes.s2.imgae: unknown node key"),
    (
        "t['topology']['nodes']['s2']['binds'][0] = 's2/unbund.conf:/etc/unbound/unbound.conf'",
        "s2/unbund.conf does not exist",
    ),
    ("t['topology']['nodes']['s2']['binds'][0] = 's2/unbound.conf'", "must be 'host-file:container-path[:ro|rw]'"),
    ("t['topology']['nodes']['s2']['binds'][0] = 's2/unbound.conf:etc/unbound.conf'", "must be absolute"),
    ("t['topology']['nodes']['s2']['binds'].pop(0)", "a unbound server needs its configuration bound at"),
    ("t['topology']['nodes']['s2']['labels']['anycastd.resolver'] = 'knot'", "anycastd.resolver must be one of"),
    ("t['topology']['nodes']['s2']['labels']['anycastd.role'] = 'dns'", "anycastd.role must be one of router"),
    (
        "t['topology']['nodes']['client']['labels']['anycastd.role'] = 'router'",
        "exactly one node labelled anycastd.role: client, has 0",
    ),
    ("t['topology']['links'][1]['endpoints'][1] = 's4:eth1'", "topology.links[1].endpoints[1]: no node 's4'"),
    ("t['topology']['links'][1]['endpoints'][1] = 's2:eth0'", "'eth0' is not a usable interface name"),
    ("t['topology']['links'][1]['endpoints'][1] = 's2:a-very-long-ifname'", "is not a usable interface name"),
    ("t['topology']['links'][1]['endpoints'] = ['router:s1', 's2:eth1']", "router:s1 is used by two links"),
    ("t['topology']['links'].append({'endpoints': ['s1:eth2', 's2:eth2']})", "every link has a router at one end"),
    ("t['topology']['links'].pop(2)", "topology.nodes.s3: needs one link to a router, or two"),
    ("t['topology']['links'].pop(3)", "topology.nodes.client: needs exactly one link, to a router"),
    (
        "t['topology']['nodes']['s2']['exec'][2] = 'ip route add 198.51.100.0/24 nexthop via 192.0.2.17 nexthop via "
        "192.0.2.1'",
        "the gateway 192.0.2.1 of 198.51.100.0/24 is on none",
    ),
    ("t['topology']['nodes']['s2']['exec'][2] = 'ip route add 198.51.100.0/24 nexthop via 192.0.2.17'", "runs only"),
    ("t['topology']['nodes']['s2']['exec'].append('systemctl start unbound')", "the namespace lab runs only"),
    ("t['topology']['nodes']['s2']['exec'][0] = 'ip addr add 192.0.2.18 dev eth1'", "needs a prefix length"),
    (
        "t['topology']['nodes']['s2']['exec'][0] = 'ip addr add 192.0.2.18/29 dev eth2'",
        "is on eth2, which is neither lo",
    ),
    (
        "t['topology']['nodes']['s2']['exec'][0] = 'ip addr add 192.0.2.34/29 dev eth1'",
        "must be different addresses on one subnet",
    ),
    ("t['topology']['nodes']['s2']['exec'].pop(1)", "eth1 needs exactly one IPv6 address, has 0"),
    ("t['topology']['nodes']['s2']['exec'][2] = 'ip route add 198.51.100.0/24 via 192.0.2.1'", "the gateway 192.0.2.1"),
    (
        "t['topology']['nodes']['s2']['exec'][3] = 'ip -6 route add 2001:db8:ffff::/64 via 192.0.2.17'",
        "not of the same family",
    ),
    ("t['topology']['nodes']['router']['exec'][0] = 'sysctl -p /etc/sysctl.conf'", "not bound into the container"),
]


@pytest.mark.parametrize(("change", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_a_broken_topology_is_refused_with_the_key_to_fix(change: str, message: str) -> None:
    with pytest.raises(clab.TopologyError) as caught:
        clab.parse(yaml.safe_dump(mutated(change)), clab.BGP_TOPOLOGY)
    assert message in str(caught.value)
    assert all(p.startswith(f"{clab.BGP_TOPOLOGY}: ") for p in caught.value.problems)


def test_every_problem_is_reported_at_once() -> None:
    raw = mutated("t['topology']['nodes']['s2']['kind'] = 'docker'; t['topology']['nodes']['s3']['image'] = 'x'")
    with pytest.raises(clab.TopologyError) as caught:
        clab.parse(yaml.safe_dump(raw), clab.BGP_TOPOLOGY)
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize("text", ["", "- a list", "name: [unclosed"])
def test_not_a_topology_at_all(text: str) -> None:
    with pytest.raises(clab.TopologyError):
        clab.parse(text, clab.BGP_TOPOLOGY)


# the lab's daemons get what the containers get ------------------------------------------------------------


def essentials(c: config.Config) -> object:
    """Everything but where anycastd keeps its files, which differ between a container and the lab."""
    return (c.router_id, c.local_asn, c.neighbors, c.services, c.metrics)


@pytest.mark.parametrize("topology", [clab.BGP_TOPOLOGY, clab.POP_TOPOLOGY], ids=lambda p: p.name)
def test_the_lab_runs_anycastd_as_each_container_does(tmp_path: Path, topology: Path) -> None:
    lab = lab_for(topology, tmp_path)
    for server in lab.server_list:
        path = lab.topology.node(server.name).bound(clab.ANYCASTD_CONFIG)
        assert path is not None
        assert essentials(config.parse(daemons.anycastd_config(lab, server))) == essentials(config.load(path))


def test_the_lab_runs_anycastd_router_as_the_container_does(tmp_path: Path) -> None:
    lab = lab_for(clab.STATIC_TOPOLOGY, tmp_path)
    path = lab.topology.router.bound(clab.ANYCASTD_ROUTER_CONFIG)
    assert path is not None
    ours, theirs = router_config.parse_router(daemons.router_config(lab)), router_config.load_router(path)
    assert (ours.services, ours.tag, ours.when_all_down, ours.metrics) == (
        theirs.services,
        theirs.tag,
        theirs.when_all_down,
        theirs.metrics,
    )


def txt_records(text: str) -> set[tuple[str, str]]:
    """(owner, text) of each TXT record, from Unbound's local-data or a zone file."""
    records = re.findall(r"'(\S+)\s+\d+\s+IN\s+TXT\s+\"([^\"]*)\"'", text)
    records += [
        (f"{owner}.example.", value) for owner, value in re.findall(r"^(\w+)\s+IN\s+TXT\s+\"([^\"]*)\"", text, re.M)
    ]
    return set(records)


def test_the_lab_resolvers_answer_what_the_containers_answer(tmp_path: Path) -> None:
    lab = lab_for(clab.BGP_TOPOLOGY, tmp_path)
    for server in lab.server_list:
        node = lab.topology.node(server.name)
        if server.resolver == "unbound":
            theirs = node.bound(clab.RESOLVER_CONFIGS["unbound"])
            ours = daemons.unbound_config(lab, server)
        else:  # the lab's BIND loads the very zone file the container gets
            theirs = node.bound(daemons.ZONE_FILE)
            assert f'file "{theirs}";' in daemons.named_config(lab, server)
            ours = theirs.read_text() if theirs else ""
        assert theirs is not None
        wanted = {("health.example.", "healthy"), ("whoami.example.", server.name)}
        assert txt_records(ours) == txt_records(theirs.read_text()) == wanted


def checker(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(f"/usr/sbin/{tool}")
    if found is None:
        pytest.skip(f"{tool} is not installed: run 'make deps'")
    return found


def test_the_container_resolver_files_are_valid() -> None:
    topology = clab.load(clab.BGP_TOPOLOGY)
    for node in topology.servers:
        conf = node.bound(clab.RESOLVER_CONFIGS[str(node.resolver)])
        assert conf is not None
        if node.resolver == "unbound":
            argv = [checker("unbound-checkconf"), str(conf)]
        else:
            argv = [checker("named-checkconf"), str(conf)]
            zone = node.bound(daemons.ZONE_FILE)
            assert zone is not None
            check = subprocess.run(
                [checker("named-checkzone"), "example.", str(zone)], check=False, capture_output=True, text=True
            )
            assert check.returncode == 0, check.stdout + check.stderr
        result = subprocess.run(argv, check=False, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_container_anycastd_files_pass_check_config() -> None:
    bgp, static = clab.load(clab.BGP_TOPOLOGY), clab.load(clab.STATIC_TOPOLOGY)
    for node in bgp.servers:
        assert config.load(node.bound(clab.ANYCASTD_CONFIG) or Path("/missing")).local_asn > 0
    router = static.router.bound(clab.ANYCASTD_ROUTER_CONFIG)
    assert router is not None
    assert [s.name for s in router_config.load_router(router).services[0].servers] == [n.name for n in static.servers]
