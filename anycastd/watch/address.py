"""The service addresses on the loopback clone, through pyroute2 (netlink).

Binding is idempotent and additive: an address already there is left as it
is, and an address anycastd did not add is never removed. The addresses stay
bound while the service is withdrawn, so queries already on their way to this
server are still answered. Only host routes (/32, /128) are bound: inside a
wider prefix, which addresses the server answers on is the operator's choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from anycastd.core.net import IPNetwork
from anycastd.errors import AddressError

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # an anycast address must not wait for (or fail) duplicate address detection


class Addresses(Protocol):
    async def ensure(self, interface: str, prefixes: Sequence[IPNetwork]) -> list[IPNetwork]:
        """Bind the host prefixes on ``interface``; return the ones that were added."""
        ...


class InMemoryAddresses:
    """For tests: remembers what would be bound."""

    def __init__(self) -> None:
        self.bound: dict[str, set[IPNetwork]] = {}

    async def ensure(self, interface: str, prefixes: Sequence[IPNetwork]) -> list[IPNetwork]:
        have = self.bound.setdefault(interface, set())
        added = [p for p in prefixes if p.num_addresses == 1 and p not in have]
        have.update(added)
        return added


class NetlinkAddresses:
    """The real thing: pyroute2 in the current network namespace."""

    async def ensure(self, interface: str, prefixes: Sequence[IPNetwork]) -> list[IPNetwork]:
        hosts = [p for p in prefixes if p.num_addresses == 1]
        try:
            async with AsyncIPRoute() as ipr:
                index = await self._link(ipr, interface)
                present = {(a.get("IFA_ADDRESS"), a["prefixlen"]) async for a in await ipr.get_addr(index=index)}
                added = []
                for p in hosts:
                    if (str(p.network_address), p.prefixlen) in present:
                        continue
                    try:
                        await ipr.addr(
                            "add",
                            index=index,
                            address=str(p.network_address),
                            prefixlen=p.prefixlen,
                            flags=IFA_F_NODAD if p.version == 6 else 0,
                        )
                    except NetlinkError as exc:  # the one the kernel refused, not every one of a batch
                        raise AddressError(f"cannot bind {p} on {interface}: {exc.args[1]}") from None
                    log.info("bound %s on %s", p, interface)
                    added.append(p)
                return added
        except NetlinkError as exc:
            raise AddressError(f"cannot bind addresses on {interface}: {exc.args[1]}") from None
        except OSError as exc:
            raise AddressError(f"cannot talk to the kernel (netlink) to bind addresses: {exc}") from None

    @staticmethod
    async def _link(ipr: AsyncIPRoute, interface: str) -> int:
        found = await ipr.link_lookup(ifname=interface)
        if not found:
            try:
                await ipr.link("add", ifname=interface, kind="dummy")
            except NetlinkError as exc:
                raise AddressError(
                    f"interface {interface} does not exist and a dummy interface cannot be created "
                    f"({exc.args[1]}); create it, or set the service's interface to lo"
                ) from None
            log.info("created dummy interface %s", interface)
            found = await ipr.link_lookup(ifname=interface)
        index = int(found[0])
        await ipr.link("set", index=index, state="up")
        return index
