"""anycastd: announce a DNS service address while the local resolver is healthy."""

from __future__ import annotations

__version__ = "0.1.0"

#: Where the Debian package (debian/) puts the documentation and the examples; messages point there.
DOC_DIR = "/usr/share/doc/anycastd-dns"
