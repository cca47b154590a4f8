"""anycastd: announce a DNS service address while the local resolver is healthy."""

from __future__ import annotations

__version__ = "0.1.0"
