"""Hostile and broken configuration files: each gives one clean error at file:line:column, or loads.

The corpus is tests/hostile/config/ (EXPECTED says what each file must give);
the generated cases below are the ones too big to commit. Memory is measured
with tracemalloc (deterministic), never time.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastd.config.router import load_router, parse_router
from anycastd.config.sidecar import load, parse
from anycastd.config.yamlfile import MAX_BYTES
from anycastd.errors import ConfigError
from tests.helpers import GOOD

CORPUS = Path(__file__).parents[1] / "hostile" / "config"
EXPECTED = dict(
    line.split("\t", 1) for line in (CORPUS / "EXPECTED").read_text().splitlines() if not line.startswith("#")
)
#: Generous: a valid file costs about 1 MiB to read (PyYAML's nodes); an alias bomb used to reach 2.9 GB.
MEMORY_BOUND = 32 * 1024 * 1024


def test_the_corpus_and_its_expectations_match() -> None:
    assert set(EXPECTED) == {p.name for p in CORPUS.iterdir() if p.name != "EXPECTED"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("loader", [load, load_router], ids=["sidecar", "router"])
def test_a_hostile_file_gives_a_clean_error_in_bounded_memory(name: str, loader: object) -> None:
    path = CORPUS / name
    tracemalloc.start()
    try:
        loader(path)  # type: ignore[operator]
        problems: list[str] = []
    except ConfigError as exc:
        problems = exc.problems
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{name}: {peak / 2**20:.0f} MiB"
    if loader is load_router:
        return  # the corpus is written for the sidecar; the router's loader must only fail cleanly
    expected = EXPECTED[name]
    if expected == "VALID":
        assert problems == []
        return
    assert problems, f"{name} loaded"
    assert all(p.startswith(f"{path}:") for p in problems), problems
    where = problems[0][len(str(path)) + 1 :].split(":")
    assert where[0].isdigit() and where[1].isdigit(), f"no line:column in {problems[0]!r}"
    assert any(expected in p for p in problems), problems


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "#" + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load(path)


def test_a_directory_or_device_is_not_a_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read|not a regular file"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load("/dev/zero")


# Fuzzing: the valid file with one value replaced by something hostile, and arbitrary text. The only
# acceptable outcomes are a Config or a ConfigError whose every line has a location.
SPECIALS = [
    ".nan",
    ".inf",
    "-.inf",
    "1e400",
    "-0.0",
    "0x10",
    "0o17",
    "0b11",
    "1_000",
    "1:30",
    "~",
    "null",
    "yes",
    "on",
    "!!int x",
    "!!float x",
    "!!str 1",
    "!!binary aGk=",
    "!!python/name:os.system",
    "!custom x",
    "&a 1",
    "*a",
    "*undefined",
    "[*a, *a]",
    "&b [*b]",
    "{<<: {a: 1}}",
    "'",
    '"',
    "[",
    "{",
    "}",
    "- x",
    "|\n  x",
    ">-\n  y",
    "=",
    "2001-12-14",
    "\t",
    "\\",
    "\x00",
    "\x85",
    "\ufeff",
    "é",
    "9" * 400,
    "-" + "9" * 30,
    "''",
    '""',
    "[]",
    "{}",
    "? x\n: y",
    "%YAML 1.2",
    "---",
    "...",
    "#",
    "@x",
    "`x",
]
KEYS = ["local_asn", "router_id", "interval", "timeout", "address", "md5_password", "prefixes", "qname", "rise"]
#: A valid file with a check of every kind, and the keys of those kinds.
KINDS = (CORPUS / "kinds-valid.yaml").read_text()
KIND_KEYS = [
    "transport",
    "server_name",
    "ca_file",
    "zones",
    "primary",
    "max_lag",
    "kind",
    "command",
    "require",
    "weight",
    "latency_ms",
]


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text, keys = draw(st.sampled_from([(GOOD + "runtime_dir: /run/anycastd\n", KEYS), (KINDS, KIND_KEYS)]))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        at = text.find(f"{key}:")
        end = text.find("\n", at)
        value = draw(st.one_of(st.sampled_from(SPECIALS), st.text(max_size=12)))
        text = text[: at + len(key) + 1] + " " + value + text[end:]
    return text


def _clean(text: str, router: bool = False) -> None:
    try:
        (parse_router if router else parse)(text, "f.yaml")
    except ConfigError as exc:
        for p in exc.problems:
            assert p.startswith("f.yaml:"), p
            where = p.split(": ", 1)[0].split(":")
            assert len(where) == 3 and where[1].isdigit() and where[2].isdigit(), p


@settings(max_examples=300, deadline=None)
@given(_mutated())
def test_fuzz_one_value_made_hostile(text: str) -> None:
    _clean(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    _clean(text)
    _clean(text, router=True)


_YAMLISH = st.recursive(
    st.one_of(st.sampled_from(SPECIALS), st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*KEYS, "services", "neighbors", "router", "exabgp", "drain"]), _YAMLISH))
def test_fuzz_documents_of_the_wrong_shape(document: dict[str, object]) -> None:
    import yaml  # noqa: PLC0415

    text = yaml.safe_dump(document)
    _clean(text)
    _clean(text, router=True)
