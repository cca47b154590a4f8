"""The layers of docs/architecture.md, enforced: imports only run down, no cycles, modules that say why they are long.

Every import counts, wherever it is written (in a function, under TYPE_CHECKING): a reader
follows each one. A rule broken here is a design change, to be made in the document first.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "anycastd"

#: The layers, bottom first: a module may import from a lower rank, and from its own package.
#: Packages of the same rank (control, watch, checks) are peers and may not import one another.
RANKS = {
    "anycastd": 0,  # the foundation: errors, untrusted input, the SO_PEERCRED peer, the version
    "anycastd.core": 1,
    "anycastd.config": 2,
    "anycastd.control": 3,
    "anycastd.watch": 3,
    "anycastd.checks": 3,
    "anycastd.announce": 4,
    "anycastd.daemons": 5,
    "anycastd.cli": 6,
}
#: The package that runs `python -m anycastd` is the command line, not the foundation.
ENTRY_POINTS = {"anycastd.__main__": "anycastd.cli"}
#: What the pure core may not import: nothing that waits, talks to the kernel or starts a process.
IMPURE = {"asyncio", "socket", "subprocess", "os", "threading", "signal", "selectors", "pyroute2", "tenacity", "dns"}
#: Modules outside the core that promise the same (their docstrings say "Pure" or "no asyncio").
ALSO_PURE = {"anycastd.announce.exabgp_text", "anycastd.watch.sockdiag"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def package_of(module: str) -> str:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    if path := MODULES.get(module):
        if path.name == "__init__.py":
            return module
        return module.rpartition(".")[0]
    return module.rpartition(".")[0]


def imports(module: str) -> Iterator[tuple[str, int]]:
    """Every module of the package that ``module`` imports, and the line it does so on."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from anycastd.announce import child` imports the module anycastd.announce.child
            names = [
                (f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module, node.lineno)
                for a in node.names
            ]
        else:
            continue
        for name, line in names:
            if name == "anycastd" or name.startswith("anycastd."):
                yield name, line


def external(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_every_package_has_a_rank() -> None:
    assert {package_of(m) for m in MODULES} <= RANKS.keys()


def test_imports_only_run_down_the_layers() -> None:
    wrong = []
    for module in MODULES:
        mine = package_of(module)
        for target, line in imports(module):
            theirs = package_of(target)
            if theirs == mine:
                continue
            if RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {mine} imports {target} ({theirs})")
    assert wrong == []


def test_there_are_no_import_cycles() -> None:
    graph = {m: {t for t, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    cycles = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(" -> ".join([*path[path.index(node) :], node]))
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if package_of(m) == "anycastd.core") + sorted(ALSO_PURE))
def test_the_pure_modules_import_nothing_that_waits_or_talks_to_the_kernel(module: str) -> None:
    allowed = {"socket", "ctypes", "errno"} if module == "anycastd.watch.sockdiag" else set()  # its codec's numbers
    assert external(module) & (IMPURE - allowed) == set()
    if module == "anycastd.watch.sockdiag":
        assert "asyncio" not in external(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_over_500_lines_says_why_in_its_docstring(module: str) -> None:
    text = MODULES[module].read_text()
    lines = text.count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert re.search(r"^Why (one module|this module is) ", doc, re.M), f"{module}: {lines} lines, and no reason"


def _significant(path: Path) -> list[tuple[int, str]]:
    """The lines that count as code: no blank lines, comments, docstrings, lone brackets or imports."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        ):
            skip |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    out = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = " ".join(raw.split())
        if number in skip or not line or line.startswith("#") or re.fullmatch(r"[\])}(\[{,:]*", line):
            continue
        out.append((number, line))
    return out


def test_no_six_lines_are_written_twice_across_the_package() -> None:
    seen: dict[tuple[str, ...], str] = {}
    repeated = []
    for path in MODULES.values():
        lines = _significant(path)
        for i in range(len(lines) - 5):
            window = tuple(text for _, text in lines[i : i + 6])
            where = f"{path.relative_to(ROOT)}:{lines[i][0]}"
            if window in seen and not seen[window].startswith(f"{path.relative_to(ROOT)}:"):
                repeated.append(f"{where} repeats {seen[window]}")
            seen.setdefault(window, where)
    assert repeated == []


#: What only some checks use (TCP, DoT, DoH, zones): dnspython's query functions bring its HTTP/2 stack, about
#: 0.1 s of CPU at every start (anycastd.checks.probers). The daemons import them when a check first needs them.
ON_DEMAND = (
    "dns.query",
    "dns.asyncquery",
    "httpcore2",
    "httpx2",
    "h2",
    "anycastd.checks.encrypted",
    "anycastd.checks.zone",
)


def test_the_daemons_start_without_what_only_some_checks_use() -> None:
    code = "import sys, anycastd.cli.anycastd; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    )
    assert "anycastd.checks.probers" in loaded
    assert loaded & set(ON_DEMAND) == set()
