"""Integration tests run real FRR, ExaBGP, BIND and Unbound in network namespaces: root only."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from anycastd_lab.bgp import BgpLab
from anycastd_lab.pop import PopLab
from anycastd_lab.static import StaticLab
from anycastd_lab.topology import reap_stale_labs
from tests.helpers import Row

NEEDED = [
    "ip",
    "vtysh",
    "unbound",
    "named",
    "dig",
    "/usr/lib/frr/zebra",
    "/usr/lib/frr/bgpd",
    "/usr/lib/frr/staticd",
    "/usr/lib/frr/bfdd",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root: creates network namespaces and runs FRR"))


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    if os.geteuid() != 0:
        return
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run 'make deps' (installs frr, unbound, bind9, bind9-dnsutils)")
    reap_stale_labs()


@pytest.fixture(scope="module")
def bgp_lab() -> Iterator[BgpLab]:
    with BgpLab() as lab:
        yield lab


@pytest.fixture
def lab(bgp_lab: BgpLab) -> BgpLab:
    """The module's lab, healthy again: every daemon running, every path in the FIB."""
    bgp_lab.restore()
    return bgp_lab


@pytest.fixture(scope="module")
def pop_module() -> Iterator[PopLab]:
    with PopLab() as lab:
        yield lab


@pytest.fixture
def pop(pop_module: PopLab) -> PopLab:
    """The module's dual-homed POP, healthy again: every router, server and session up."""
    pop_module.restore()
    return pop_module


@pytest.fixture(scope="module")
def static_lab() -> Iterator[StaticLab]:
    with StaticLab() as lab:
        yield lab


@pytest.fixture
def router_lab(static_lab: StaticLab) -> StaticLab:
    """The module's router-side lab, healthy again: resolvers and anycastd router running, every path in the FIB."""
    static_lab.restore()
    return static_lab


# The fault matrix (test_faults_*.py): each test fills one row; `make reliability` collects them ------------------

#: Where to write the rows as JSON (bench/reliability.py sets it and renders docs/reliability.md).
REPORT_ENV = "ANYCASTD_FAULT_REPORT"
ROWS: list[Row] = []


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Row:
    entry = Row(test=f"{Path(request.node.fspath).name}::{request.node.name}")
    ROWS.append(entry)
    return entry


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield  # type: ignore[assignment]  # pytest's wrapper hooks are typed as plain generators
    name = f"{Path(item.fspath).name}::{item.name}"
    for entry in ROWS:
        if entry.test == name and (report.when == "call" or report.failed):
            entry.outcome = report.outcome
    return report  # type: ignore[return-value]


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_ENV)
    if target and ROWS:
        Path(target).write_text(json.dumps([asdict(r) for r in ROWS], indent=1) + "\n")
