"""One status writer for both daemons: a health, a check and a transition are spelled the same in each."""

from __future__ import annotations

import asyncio

from anycastd.daemons.status import STATUS_VERSION, TRANSITIONS_SHOWN
from tests.helpers import bring_up, hard, make_router, make_sidecar, ok, rounds

#: What a health's entry holds in both modes (docs/operations.md, `status --json`).
HEALTH_KEYS = {"state", "since", "maintenance", "damping", "require", "checks", "transitions"}
CHECK_KEYS = {
    "index",
    "kind",
    "transport",
    "address",
    "state",
    "probes",
    "failures",
    "detection",
    "detection_note",
    "woken",
    "confirming",
    "last",
}


def test_a_service_of_the_sidecar_and_a_server_of_the_router_share_every_health_field() -> None:
    async def go() -> None:
        sidecar, _, _, _ = make_sidecar()
        await bring_up(sidecar, "dns")
        router, _, prober, _ = make_router()
        await rounds(router, prober, 2)
        side, rout = sidecar.status(), router.status()
        assert (side["version"], side["mode"]) == (STATUS_VERSION, "sidecar")
        assert (rout["version"], rout["mode"]) == (STATUS_VERSION, "router")
        service = side["services"][0]
        server = rout["services"][0]["servers"][0]
        assert service.keys() >= HEALTH_KEYS and server.keys() >= HEALTH_KEYS
        assert set(service["checks"][0]) == set(server["checks"][0]) == CHECK_KEYS
        assert service["checks"][0]["address"] == "192.0.2.10"
        assert server["checks"][0]["address"] == "192.0.2.2"  # the server's admin address, not the template's
        assert set(service["transitions"][0]) == set(server["transitions"][0])

    asyncio.run(go())


def test_both_keep_the_same_number_of_transitions() -> None:
    async def go() -> None:
        router, _, prober, _ = make_router()
        for _ in range(TRANSITIONS_SHOWN):
            prober.now["ns1"] = hard
            await rounds(router, prober, 2)
            prober.now["ns1"] = ok
            await rounds(router, prober, 2)
        server = router.status()["services"][0]["servers"][0]
        assert len(server["transitions"]) == TRANSITIONS_SHOWN
        assert len(router.members["dns"][0].health.transitions) > TRANSITIONS_SHOWN

    asyncio.run(go())
