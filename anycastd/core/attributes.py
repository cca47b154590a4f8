"""The BGP path attributes a service is announced with: the one vocabulary the configuration, the
announcers and the ExaBGP text protocol share."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RouteAttributes:
    """The BGP path attributes a service's prefixes are announced with (the config's ``bgp``), validated:
    communities ``ASN:VALUE`` (RFC 1997), large communities ``ASN:DATA:DATA`` (RFC 8092), MED, and how
    many extra times the local AS is prepended to the AS path; ``weight``, the service's relative capacity,
    goes out as the link-bandwidth extended community (None: not sent, and every path weighs the same)."""

    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    as_path_prepend: int = 0
    weight: int | None = None

    def tagged(self, community: str) -> RouteAttributes:
        """These attributes with ``community`` added (once)."""
        if community in self.communities:
            return self
        return replace(self, communities=(*self.communities, community))

    def weighing(self, weight: int | None) -> RouteAttributes:
        """These attributes with the path's weight set to ``weight`` (None: no link bandwidth)."""
        return self if weight == self.weight else replace(self, weight=weight)


PLAIN = RouteAttributes()
