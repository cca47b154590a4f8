"""docs/configuration.md stays true: its examples parse, and it describes every key the code accepts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from anycastd.config import checks, schema
from anycastd.config import router as router_config
from anycastd.config import sidecar as config
from anycastd.core.attributes import RouteAttributes

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def described(text: str) -> set[str]:
    """The keys in the first column of the section's tables."""
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M))


def fields(*classes: type) -> set[str]:
    return {f.name for c in classes for f in dataclasses.fields(c)} - {"name", "source"}


def test_the_examples_are_valid_configurations() -> None:
    sidecar, router = yaml_blocks(section("The sidecar")), yaml_blocks(section("The router"))
    checks_examples = [b for b in sidecar if b.startswith("checks:")]
    sidecar = [b for b in sidecar if not b.startswith("checks:")]
    assert len(checks_examples) == 3, "an example per kind of check"
    top = sidecar[0][: sidecar[0].index("services:")]
    kinds = set()
    for block in checks_examples:
        indented = "".join(f"    {line}\n" for line in block.splitlines())
        service = config.parse(f"{top}services:\n  dns:\n    prefixes: [203.0.113.53/32]\n{indented}").services[0]
        kinds |= {c.kind for c in service.checks}
    assert kinds == set(checks.KINDS)
    assert len(sidecar) == 4 and len(router) == 1
    assert config.parse(sidecar[0]).services[0].name == "dns"
    # the two sites of services.NAME.bgp, and degraded_when: each a services block, in the full example's place
    top = sidecar[0][: sidecar[0].index("services:")]
    degradable = config.parse(top + sidecar[3]).services[0]
    assert (degradable.bgp.weight, degradable.degraded_weight) == (10, 1)
    assert degradable.checks[0].degraded_when is not None
    site_a, site_b = (config.parse(top + block).services[0].bgp for block in sidecar[1:3])
    assert (site_a.communities, site_a.as_path_prepend, site_a.med) == (("64500:100",), 0, None)
    assert (site_b.communities, site_b.as_path_prepend, site_b.med) == (("64500:200",), 3, 200)
    assert len(router_config.parse_router(router[0]).services[0].servers) == 2


def test_every_sidecar_key_is_described() -> None:
    keys = set(config._TOP_KEYS) | set(checks.CHECK_KEYS)
    keys |= fields(config.Neighbor, config.Service, schema.ControlSettings, config.DrainSettings)
    keys |= fields(schema.MetricsSettings, config.ExaBGPSettings, RouteAttributes) | schema.DAMPING_KEYS
    assert keys - described(section("The sidecar")) == set()


def test_every_router_key_is_described() -> None:
    keys = set(router_config._ROUTER_TOP_KEYS) | set(router_config._ROUTER_KEYS) | set(router_config._SERVER_KEYS)
    keys |= fields(router_config.RoutedService)
    assert keys - described(section("The router")) == set()
