"""The BGP path attributes a service is announced with: the one vocabulary the configuration, the
announcers and the ExaBGP text protocol share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RouteAttributes:
    """The BGP path attributes a service's prefixes are announced with (the config's ``bgp``), validated:
    communities ``ASN:VALUE`` (RFC 1997), large communities ``ASN:DATA:DATA`` (RFC 8092), MED, and how
    many extra times the local AS is prepended to the AS path."""

    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    as_path_prepend: int = 0

    def tagged(self, community: str) -> RouteAttributes:
        """These attributes with ``community`` added (once)."""
        if community in self.communities:
            return self
        return RouteAttributes((*self.communities, community), self.large_communities, self.med, self.as_path_prepend)


PLAIN = RouteAttributes()
