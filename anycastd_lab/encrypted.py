"""DNS over TLS and over HTTPS from the lab's real resolvers: BIND 9.18 and Unbound as Debian 12 ships them.

One certificate per lab (openssl; self-signed, for ``dns.example`` and every server's admin address) serves
both resolvers. ``tls_resolver_config(lab, server)`` is the lab's configuration of the server's resolver with
DoT on port 853 and DoH (HTTP/2, ``/dns-query``) on port 443 added, on the admin and the service addresses;
port 53 stays as it was. ``refuse(lab, server, port)`` makes a TLS listener look dead from the outside, as a
crashed listener behind a still-answering port 53 does: every TCP segment to that port, of a connection
already open too, is answered with a reset (nftables, in the server's namespace).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from anycastd_lab.daemons import named_config, unbound_config
from anycastd_lab.topology import SERVICE_V4, SERVICE_V6, Lab, Server

SERVER_NAME = "dns.example"
DOT_PORT, DOH_PORT = 853, 443
TABLE = "acd_tls_refuse"


def self_signed(cert: Path, key: Path, name: str, alt_names: list[str]) -> None:
    """A self-signed certificate for ``name`` (and the ``alt_names``, such as ``IP:192.0.2.10``), and its key,
    made with openssl: its own CA file."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={','.join([f'DNS:{name}', *alt_names])}"],
        check=True, capture_output=True,
    )  # fmt: skip


def certificate(lab: Lab) -> tuple[Path, Path]:
    """The lab's certificate and key, made once: the CA file the checks trust is the certificate itself."""
    d = lab.workdir / "tls"
    cert, key = d / "dns.pem", d / "dns.key"
    if cert.exists():
        return cert, key
    d.mkdir(exist_ok=True)
    self_signed(cert, key, SERVER_NAME, [f"IP:{a}" for s in lab.server_list for a in (s.v4, s.v6)])
    cert.chmod(0o644)
    key.chmod(0o644)  # the lab's resolvers and anycastd run as root, or as the lab's user (privilege tests)
    return cert, key


def tls_resolver_config(lab: Lab, server: Server) -> str:
    cert, key = certificate(lab)
    if server.resolver == "bind":
        text = named_config(lab, server)
        listen = "".join(
            f"    {directive} port {DOT_PORT} tls local-tls {{ any; }};\n"
            f"    {directive} port {DOH_PORT} tls local-tls http local-http {{ any; }};\n"
            for directive in ("listen-on", "listen-on-v6")
        )
        text = text.replace("options {\n", f'tls local-tls {{ key-file "{key}"; cert-file "{cert}"; }};\n'
                            'http local-http { endpoints { "/dns-query"; }; };\noptions {\n' + listen)  # fmt: skip
        return text
    addresses = [server.v4, server.v6, SERVICE_V4.split("/")[0], SERVICE_V6.split("/")[0]]
    listen = "".join(f"    interface: {a}@{port}\n" for a in addresses for port in (DOT_PORT, DOH_PORT))
    return unbound_config(lab, server).replace(
        "    ip-freebind: yes\n",
        f'    ip-freebind: yes\n{listen}    tls-service-key: "{key}"\n    tls-service-pem: "{cert}"\n'
        f"    tls-port: {DOT_PORT}\n    https-port: {DOH_PORT}\n",
    )


def refuse(lab: Lab, server: Server, port: int, on: bool = True) -> None:
    """Reset every TCP segment to ``port`` on ``server`` (``on``), or stop doing so."""
    ns = lab.ns(server.name)
    lab.exec(ns, "nft", f"delete table inet {TABLE}", check=False)
    if on:
        lab.exec(ns, "nft", f"add table inet {TABLE}; add chain inet {TABLE} in {{ type filter hook input priority "
                 f"-10; }}; add rule inet {TABLE} in tcp dport {port} reject with tcp reset")  # fmt: skip
