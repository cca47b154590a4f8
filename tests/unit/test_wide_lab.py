"""anycastd_lab.wide's generated sidecar topology: each server's anycastd.yaml loads, and the router's
frr.conf is frr/bgp/frr.conf with the servers' sessions, their policy and ECMP wide enough for all of them.

tests/integration/test_ecmp_sidecar_lab.py runs the result on real daemons; here, without root, the text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anycastd.announce import frr_policy
from anycastd.config import sidecar as config
from anycastd_lab import daemons, wide
from anycastd_lab.topology import Lab

SESSION = re.compile(r"^ neighbor (\S+) remote-as (\d+)\n neighbor \1 peer-group (DNS[46])$", re.MULTILINE)


def files(directory: Path, n: int) -> list[Path]:
    return [directory / f"s{k}" / "anycastd.yaml" for k in range(1, n + 1)]


def test_twenty_servers_get_a_session_each_per_family_their_policy_and_twenty_paths(tmp_path: Path) -> None:
    topology = wide.wide_topology(tmp_path, 20, sidecar=True)
    conf = (tmp_path / "frr.conf").read_text()
    sessions = SESSION.findall(conf)
    expected = [(f"192.0.2.{4 * (k - 1) + 2}", str(65000 + k), "DNS4") for k in range(1, 21)] + [
        (f"2001:db8:0:{k:x}::2", str(65000 + k), "DNS6") for k in range(1, 21)
    ]
    assert sorted(sessions) == sorted(expected)
    assert len(re.findall(r"^ neighbor [0-9a-f.:]+ ", conf, re.MULTILINE)) == 80  # none of the three servers'
    assert re.findall(r"^  maximum-paths (\d+)$", conf, re.MULTILINE) == ["20", "20"]
    assert " bfd profile" not in conf.split("router bgp", 1)[1]
    servers = [frr_policy.ServerFile(f.parent.name, str(f), config.load(f)) for f in files(tmp_path, 20)]
    assert frr_policy.extract(conf) == frr_policy.render(servers)
    lab = Lab(topology, workdir=tmp_path / "work")
    assert [s.asn for s in lab.server_list] == [65000 + k for k in range(1, 21)]
    assert {s.name: s.v4 for s in lab.server_list}["s20"] == "192.0.2.78"


def test_few_servers_keep_the_files_sixteen_paths_and_the_router_side_variant_has_no_bgp(tmp_path: Path) -> None:
    wide.wide_topology(tmp_path / "bgp", 3, sidecar=True)
    conf = (tmp_path / "bgp" / "frr.conf").read_text()
    assert re.findall(r"^  maximum-paths (\d+)$", conf, re.MULTILINE) == ["16", "16"]
    wide.wide_topology(tmp_path / "static", 3)
    assert not (tmp_path / "static" / "frr.conf").exists()
    assert not any((tmp_path / "static").glob("s*/anycastd.yaml"))


def test_a_reference_file_that_lost_the_lines_it_rewrites_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = daemons.frr_bgp_config()
    monkeypatch.setattr(daemons, "frr_bgp_config", lambda: original.replace("  maximum-paths 16\n", "", 1))
    with pytest.raises(ValueError, match="no longer has the lines"):
        wide.wide_topology(tmp_path, 2, sidecar=True)


def test_deviations_are_standard_deviations_of_an_equal_share() -> None:
    # 400 flows over 2 servers: mean 200, sigma sqrt(400 * 1/2 * 1/2) = 10
    assert wide.deviations({"s1": 210, "s2": 190}) == pytest.approx({"s1": 1.0, "s2": -1.0})
    assert wide.deviations({"s1": 200, "s2": 200}) == {"s1": 0.0, "s2": 0.0}
