"""A validating Unbound for the lab: a signed zone it serves to its own validator, and the trust anchor to check it.

``signed.example.`` is signed once per lab with BIND's tools (dnssec-keygen, dnssec-signzone; Debian's
bind9-utils, which `make deps` installs with bind9), and once more with signatures that expired yesterday.
Unbound loads it as an ``auth-zone`` for its own iterator only (``for-upstream``), so a recursive query for
``health.signed.example.`` goes through the validator exactly as an answer from the Internet would, and comes
back with the AD bit while the trust anchor matches the zone's key and its signatures are current.

The expired signatures a DNSSEC check must catch are made at run time with unbound-control, which leaves
Unbound's sockets alone (a SIGHUP reload closes and reopens them, and the probes would fail for that instead):
``expire(lab, server)`` replaces the zone's file with the copy whose signatures expired and reloads it
(``auth_zone_reload``): every answer from it is bogus, SERVFAIL. ``heal(lab, server)`` undoes it. A resolver
with the wrong trust anchor (``validating_unbound_config(lab, server, wrong_anchor(lab))``) finds every
answer from the zone bogus from its start. An answer the resolver never validates (its own local data,
``health.example.``) comes without the AD bit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from anycastd_lab.daemons import unbound_config
from anycastd_lab.topology import Lab, Server

SIGNED_ZONE = "signed.example."
SIGNED_QNAME = "health.signed.example."


def signed_zone(lab: Lab) -> tuple[Path, str]:
    """The signed zone file and the DS record of its key-signing key, made once per lab (with the copy whose
    signatures expired yesterday beside it)."""
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
    expired = d / "signed.example.zone.expired"
    _run("dnssec-signzone", "-q", "-S", "-K", str(d), "-d", str(d), "-o", SIGNED_ZONE, "-P", "-s", "now-172800",
         "-e", "now-86400", "-f", str(expired), str(zone))  # fmt: skip
    expired.chmod(0o644)
    record = _run("dnssec-dsfromkey", "-2", str(d / f"{ksk}.key")).split()
    ds.write_text(" ".join(record[3:]))  # "NAME IN DS" left out: key tag, algorithm, digest type, digest
    signed.chmod(0o644)
    return signed, ds.read_text()


def wrong_anchor(lab: Lab) -> str:
    """The zone's DS with its digest changed: the trust anchor of a resolver configured with the wrong key."""
    _, ds = signed_zone(lab)
    tag, algorithm, digest_type, digest = ds.split()
    return f"{tag} {algorithm} {digest_type} {digest[:-1]}{'0' if digest[-1] != '0' else '1'}"


def validating_unbound_config(lab: Lab, server: Server, anchor: str | None = None) -> str:
    """The lab's Unbound configuration for ``server`` with the validator on, ``signed.example.`` served to it,
    the zone's trust anchor (``anchor``: another DS, a wrong one), and unbound-control on a Unix socket."""
    signed, ds = signed_zone(lab)
    ds = anchor or ds
    served = lab.workdir / server.name / "signed.example.zone"
    served.write_text(signed.read_text())
    text = unbound_config(lab, server).replace('module-config: "iterator"', 'module-config: "validator iterator"')
    # the lab's static local zone "example." would answer for signed.example. itself: it is resolved instead
    text = text.replace(
        "remote-control:\n",
        f"""    local-zone: "{SIGNED_ZONE}" transparent
    trust-anchor: "{SIGNED_ZONE} DS {ds}"
auth-zone:
    name: "{SIGNED_ZONE}"
    zonefile: "{served}"
    for-upstream: yes
    for-downstream: no
    fallback-enabled: no
remote-control:
""",
    )
    return text.replace(
        "    control-enable: no\n",
        f'    control-enable: yes\n    control-interface: "{_socket(lab, server)}"\n    control-use-cert: no\n',
    )


def expire(lab: Lab, server: Server) -> None:
    served = lab.workdir / server.name / "signed.example.zone"
    served.write_text((lab.workdir / "dnssec" / "signed.example.zone.expired").read_text())
    _control(lab, server, "auth_zone_reload", SIGNED_ZONE)


def heal(lab: Lab, server: Server) -> None:
    signed, _ = signed_zone(lab)
    (lab.workdir / server.name / "signed.example.zone").write_text(signed.read_text())
    _control(lab, server, "auth_zone_reload", SIGNED_ZONE)


def _socket(lab: Lab, server: Server) -> Path:
    return lab.workdir / server.name / "unbound.ctl"


def _control(lab: Lab, server: Server, *command: str) -> None:
    """An unbound-control command, then the zone's cached answers flushed so that the next query sees it."""
    for argv in (command, ("flush_zone", SIGNED_ZONE), ("flush_bogus",)):
        _run("unbound-control", "-c", str(lab.workdir / server.name / "unbound.conf"), *argv)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
