"""The router's import policy generated from the servers' files: each server may announce only its own prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from anycastd.announce import frr_policy
from anycastd.cli.anycastd import main
from anycastd.config.sidecar import load, parse
from tests.helpers import GOOD

ROOT = Path(__file__).parents[2]
CLAB = ROOT / "containerlab"
FRR_CONF = ROOT / "frr" / "bgp" / "frr.conf"


def _servers() -> list[frr_policy.ServerFile]:
    return [
        frr_policy.ServerFile(f"s{n}", f"s{n}/anycastd.yaml", load(CLAB / f"s{n}" / "anycastd.yaml")) for n in (1, 2, 3)
    ]


def test_the_shipped_frr_conf_holds_the_policy_of_the_reference_servers() -> None:
    assert frr_policy.extract(FRR_CONF.read_text()) == frr_policy.render(_servers())


def test_each_server_is_matched_on_its_own_session_and_its_own_prefixes() -> None:
    block = frr_policy.render(_servers())
    s1 = block[block.index("route-map FROM-DNS-V4 permit 10") : block.index("route-map FROM-DNS-V4 permit 20")]
    assert " match peer 192.0.2.10\n" in s1 and " match ip address prefix-list FROM-s1-V4\n" in s1
    assert "ip prefix-list FROM-s1-V4 seq 10 permit 203.0.113.53/32\n" in block
    assert "ipv6 prefix-list FROM-s1-V6 seq 10 permit 2001:db8::53/128\n" in block
    assert "ge " not in block and " le " not in block  # exact prefixes only


def test_a_server_without_ipv6_gets_no_ipv6_entry_and_an_empty_family_denies() -> None:
    v4_only = GOOD.replace(
        "  - address: 2001:db8:0:1::1\n    peer_asn: 65000\n    local_address: 2001:db8:0:1::2\n    md5_password: s3cret\n",
        "",
    ).replace("[203.0.113.53/32, 2001:db8::53/128]", "[203.0.113.53/32, 203.0.113.54/32]")
    block = frr_policy.render([frr_policy.ServerFile("a", "a.yaml", parse(v4_only))])
    assert "ip prefix-list FROM-a-V4 seq 20 permit 203.0.113.54/32" in block
    assert "FROM-a-V6" not in block
    assert "route-map FROM-DNS-V6 deny 10\n" in block


@pytest.mark.parametrize("name", ["s 1", "s1\nip prefix-list X permit 0.0.0.0/0", "s1\n", "", "-x", "s1!", "a" * 33])
def test_a_server_name_that_could_change_frrs_syntax_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="server name"):
        frr_policy.render([frr_policy.ServerFile(name, "x", parse(GOOD))])


def test_two_servers_with_one_session_address_are_refused() -> None:
    with pytest.raises(ValueError, match=r"both have the session address 192\.0\.2\.10"):
        frr_policy.render([frr_policy.ServerFile(n, "x", parse(GOOD)) for n in ("a", "b")])


def test_the_cli_prints_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"s{n}={CLAB / f's{n}' / 'anycastd.yaml'}" for n in (1, 2, 3)]
    assert main(["frr-policy", *args]) == 0
    assert capsys.readouterr().out == frr_policy.render(_servers())
    conf = tmp_path / "frr.conf"
    conf.write_text(FRR_CONF.read_text().replace("permit 203.0.113.53/32", "permit 203.0.113.0/24 ge 32", 1))
    assert main(["frr-policy", "--check", str(conf), *args]) == 1
    assert main(["frr-policy", "--write", str(conf), *args]) == 0
    assert conf.read_text() == FRR_CONF.read_text()
    assert main(["frr-policy", "--check", str(conf), *args]) == 0
    assert main(["frr-policy", "s1"]) == 1
    assert "give NAME=FILE" in capsys.readouterr().err


@pytest.mark.parametrize("tor", ["r1", "r2"])
def test_each_pop_tor_holds_the_policy_of_the_pop_servers(tor: str) -> None:
    """One block serves both ToRs: it names both of each server's session addresses."""
    servers = [
        frr_policy.ServerFile(f"s{n}", f"s{n}/anycastd.yaml", load(CLAB / "pop" / f"s{n}" / "anycastd.yaml"))
        for n in (1, 2, 3)
    ]
    conf = (ROOT / "frr" / "pop" / f"{tor}.conf").read_text()
    assert frr_policy.extract(conf) == frr_policy.render(servers)
    assert conf.index("\nbfd\n") < conf.index("route-map")  # the bfd block first (frr/bgp/frr.conf says why)
