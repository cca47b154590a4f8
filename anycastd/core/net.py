"""The address types every layer speaks: one IPv4 or IPv6 address, one IPv4 or IPv6 prefix."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
