"""A validating Unbound for the lab: a signed zone it serves to its own validator, and the trust anchor to check it.

``signed.example.`` is signed once per lab with BIND's tools (dnssec-keygen, dnssec-signzone; Debian's
bind9-utils, which `make deps` installs with bind9). Unbound loads it as an ``auth-zone`` for its own
iterator only (``for-upstream``), so a recursive query for ``health.signed.example.`` goes through the
validator exactly as an answer from the Internet would, and comes back with the AD bit when the trust anchor
matches the zone's key. The faults a DNSSEC check must catch are then configuration changes, reloaded with
SIGHUP as an operator's would be:

- ``anchor="none"``: no trust anchor; the zone is insecure, answered without the AD bit;
- ``anchor="wrong"``: an anchor that matches no key of the zone; every answer from it is bogus (SERVFAIL).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from anycastd_lab.daemons import unbound_config
from anycastd_lab.topology import Lab, Server

SIGNED_ZONE = "signed.example."
SIGNED_QNAME = "health.signed.example."
#: A DS record that matches no key: SHA-256 of nothing anycastd's lab ever signs.
WRONG_DS = "11111 13 2 " + "AB" * 32


def signed_zone(lab: Lab) -> tuple[Path, str]:
    """The signed zone file and the DS record of its key-signing key, made once per lab."""
    d = lab.workdir / "dnssec"
    signed, ds = d / "signed.example.zone.signed", d / "ds"
    if signed.exists() and ds.exists():
        return signed, ds.read_text()
    d.mkdir(exist_ok=True)
    zone = d / "signed.example.zone"
    zone.write_text(
        "$TTL 300\n"
        f"@ IN SOA ns.{SIGNED_ZONE} hostmaster.{SIGNED_ZONE} 1 3600 600 86400 300\n"
        f"@ IN NS ns.{SIGNED_ZONE}\n"
        "ns IN A 192.0.2.53\n"
        'health IN TXT "healthy"\n'
    )
    algorithm = ["-a", "ECDSAP256SHA256", "-K", str(d)]
    ksk = _run("dnssec-keygen", "-q", *algorithm, "-f", "KSK", SIGNED_ZONE).strip()
    _run("dnssec-keygen", "-q", *algorithm, SIGNED_ZONE)
    _run("dnssec-signzone", "-q", "-S", "-K", str(d), "-d", str(d), "-o", SIGNED_ZONE, "-f", str(signed), str(zone))
    record = _run("dnssec-dsfromkey", "-2", str(d / f"{ksk}.key")).split()
    ds.write_text(" ".join(record[3:]))  # "NAME IN DS" left out: key tag, algorithm, digest type, digest
    signed.chmod(0o644)
    return signed, ds.read_text()


def validating_unbound_config(lab: Lab, server: Server, anchor: str = "right") -> str:
    """The lab's Unbound configuration for ``server`` with the validator on, ``signed.example.`` served to it,
    and a trust anchor that is ``right``, ``wrong`` or ``none``."""
    signed, ds = signed_zone(lab)
    anchors = {
        "right": f'    trust-anchor: "{SIGNED_ZONE} DS {ds}"\n',
        "wrong": f'    trust-anchor: "{SIGNED_ZONE} DS {WRONG_DS}"\n',
    }
    text = unbound_config(lab, server).replace('module-config: "iterator"', 'module-config: "validator iterator"')
    # the lab's static local zone "example." would answer for signed.example. itself: it is resolved instead
    text = text.replace(
        "remote-control:\n",
        f"""    local-zone: "{SIGNED_ZONE}" transparent
{anchors.get(anchor, "")}auth-zone:
    name: "{SIGNED_ZONE}"
    zonefile: "{signed}"
    for-upstream: yes
    for-downstream: no
    fallback-enabled: no
remote-control:
""",
    )
    return text


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
