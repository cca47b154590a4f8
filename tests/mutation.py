"""`make mutation`: run mutmut over the pure core and fail on any survivor not explained here.

    python -m tests.mutation          # after `mutmut run`: the verdict

What is mutated is [tool.mutmut] in pyproject.toml: the health machine,
flap damping and soft degradation (anycastd/core/health.py, damping.py,
degradation.py), the planner
(anycastd/core/routes.py), zone freshness (anycastd/core/serials.py), the
skeleton's schedule and maintenance book (anycastd/daemons/skeleton.py), the
wait for a drained node to go quiet (anycastd/watch/drain.py) and the
configuration's validation (anycastd/config/yamlfile.py, schema.py, checks.py,
sidecar.py, router.py). Every mutant must be
killed by a test (the tests named after the mutants they kill are marked
"Named by the mutants of `make mutation`") or be listed in EQUIVALENT with
why no test can tell it apart. A mutant that makes a test hang is reported by
mutmut as a timeout: the tests noticed it (they never finished), so it counts
as killed.

A few lines of the configuration readers carry ``# pragma: no mutate``: the
guards that return None when a value is missing (``if address is None or
...``). A value is None there only when its reader has already recorded a
problem, and parsing raises ConfigError on any problem before a value is
used, so no mutant of such a line can change what a configuration parses to;
the guards exist for the type checker.
"""

from __future__ import annotations

import subprocess
import sys

#: Mutants no test can tell from the original, and why. Keyed by mutmut's name (it changes when the function
#: does: then this list is read again, which is the point).
EQUIVALENT: dict[str, str] = {
    "anycastd.daemons.skeleton.xǁMaintenanceBookǁrestore__mutmut_28": (
        '`log.error("%s", problem)` -> `log.error(problem)`: logging %-formats only when given arguments, so '
        "the line logged is the same, even for a problem with a % in it"
    ),
    "anycastd.watch.drain.x_wait_quiet__mutmut_28": (
        '`log.warning("%s", note)` -> `log.warning(note)`: the same line, for the same reason as the one above'
    ),
    # what both daemons share (anycastd.daemons.skeleton)
    "anycastd.daemons.skeleton.x_log_decision__mutmut_5": (
        '`log.log(level, "%s", transition)` -> `log.log(level, transition)`: logging formats the message with '
        "str() either way, and a message given no arguments is not %-formatted, so the line is the same"
    ),
    "anycastd.daemons.skeleton.x_log_decision__mutmut_14": (
        '`log.warning("%s", note)` -> `log.warning(note)`: the same line, for the same reason as the one above'
    ),
    "anycastd.daemons.skeleton.xǁLoopsǁ__init____mutmut_2": (
        "`_stopping = False` -> `None`: it is only ever tested for truth, and both are false"
    ),
    "anycastd.daemons.skeleton.x_lift_and_forgive__mutmut_39": (
        "`health.forgive(now)` -> `forgive(None)`: as anycastd.core.health's own forgive mutant below, clearing "
        "the penalty reads no time and changes no state, so nothing is stamped with it"
    ),
    "anycastd.daemons.skeleton.x__run__mutmut_12": (
        "`if not task.done(): task.cancel()` -> `if task.done()`: the finally runs once the probe task is done "
        "(cancelling a done task does nothing), or once the loop itself was cancelled, which asyncio passes on "
        "to the task it awaits, or hurried, which cancelled it already: it is never left running either way"
    ),
    "anycastd.core.health.xǁServiceHealthǁfeed__mutmut_8": (
        "the fast path's `one.feed(result, now)` -> `None`: a pass of a check that is UP leaves it UP, and a "
        "check reads the time only to stamp a change of state"
    ),
    # soft degradation (anycastd.core.degradation) and its configuration
    **dict.fromkeys(
        [f"anycastd.config.sidecar.x__degradation_fits__mutmut_{n}" for n in (19, 25, 33)],
        "a `return False` after `r.problem(...)` -> True: the problem is recorded on the line before, and parsing "
        "raises ConfigError on any problem before the service it would build is used",
    ),
    # the configuration readers
    **dict.fromkeys(
        [
            "anycastd.config.sidecar.x_parse__mutmut_31",
            "anycastd.config.sidecar.x_parse__mutmut_43",
            "anycastd.config.sidecar.x_parse__mutmut_61",
            "anycastd.config.sidecar.x_parse__mutmut_75",
            "anycastd.config.sidecar.x_parse__mutmut_149",
            "anycastd.config.router.x_parse_router__mutmut_78",
            "anycastd.config.router.x_parse_router__mutmut_92",
        ],
        'the top level\'s path `""` -> `None`: Reader.field and Reader.items only ask whether the path is empty, and both are, so every key path and message is the same',
    ),
    **dict.fromkeys(
        [
            "anycastd.config.router.x_parse_router__mutmut_125",
            "anycastd.config.router.x_parse_router__mutmut_126",
            "anycastd.config.router.x_parse_router__mutmut_127",
        ],
        "a guard's `or` -> `and`: a value is None only after its reader recorded a problem, and `r.problems` comes first in the same condition, so parsing raises either way",
    ),
    "anycastd.config.sidecar.x__exabgp__mutmut_41": (
        "exabgp.watchdog's default -> None: a missing key then gives None, and the next line puts the default in "
        "its place (`watchdog if watchdog is not None else ExaBGPSettings.watchdog`)"
    ),
    "anycastd.config.sidecar.x__exabgp__mutmut_62": (
        "exabgp.stall's default -> None: a missing key then gives None, and the line after the next puts the "
        "default in its place (`stall if stall is not None else ExaBGPSettings.stall`)"
    ),
    **dict.fromkeys(
        ["anycastd.config.sidecar.x_parse__mutmut_132", "anycastd.config.sidecar.x_parse__mutmut_137"],
        "bfdd.command's default -> None (or none given): a missing key then gives None, and the same line puts "
        "the default in its place (`... or DEFAULT_BFDD`)",
    ),
    "anycastd.config.sidecar.x__bfd_interval__mutmut_21": (
        "`> 1e-6` -> `>= 1e-6` in the whole-milliseconds check: the two differ only for an interval whose "
        "milliseconds come out exactly 1e-6 off a whole number, which the float product `value * 1000` "
        "essentially never does (its own rounding error is some 1e-14)"
    ),
    "anycastd.config.router.x_parse_router__mutmut_12": (
        "`top.get('router', {})` -> `top.get('router', None)`: a missing router section then takes the `else {}` "
        "of the next line, which is the same empty mapping"
    ),
    "anycastd.config.router.x_parse_router__mutmut_14": "`top.get('router', )`: the same as the one above",
    "anycastd.config.router.x__server__mutmut_30": (
        "a refused server name -> `''` instead of None: the problem is recorded either way and parsing raises; "
        "the server built with it is never used"
    ),
    "anycastd.config.yamlfile.xǁReaderǁ_location__mutmut_16": (
        "`cut > 0` -> `cut >= 0`: a key path never starts with '.' or '[', so cut is never 0"
    ),
    "anycastd.config.yamlfile.xǁReaderǁ_mapping__mutmut_21": (
        "a key's own path -> None: _scalar uses the path only to name a number that cannot be built, and a "
        "key is a string or a number YAML has already resolved, which builds"
    ),
    "anycastd.config.schema.x_read_top__mutmut_13": (
        "the top level's path `\"\"` -> `None`: the same as the readers' entries above"
    ),
    **dict.fromkeys(
        [f"anycastd.config.yamlfile.xǁReaderǁ_scalar__mutmut_{n}" for n in (2, 3, 4, 5)],
        "_scalar's refusal of a tag: the composer has already refused every explicit tag, and the tags YAML "
        "resolves by itself are all plain ones, so this line is never reached (it stays as a second wall)",
    ),
    **dict.fromkeys(
        [f"anycastd.config.yamlfile.xǁReaderǁ_scalar__mutmut_{n}" for n in (7, 8)],
        "the string tag left out of the shortcut: a plain string is then built by PyYAML's own constructor, "
        "which gives the same str",
    ),
    "anycastd.config.yamlfile.xǁReaderǁdocument__mutmut_25": (
        "`exc.character[:1]` -> `[:2]`: PyYAML reports one character, so both slices are that character"
    ),
    "anycastd.config.yamlfile.xǁReaderǁdocument__mutmut_26": (
        '`or "\\0"` -> `or "XX\\0XX"`: PyYAML always reports the character, so the fallback is never used'
    ),
    "anycastd.config.yamlfile.xǁReaderǁdocument__mutmut_28": (
        "the last `except yaml.YAMLError`: every error PyYAML raises is one of the kinds caught above it "
        "(the line is marked `pragma: no cover` for the same reason)"
    ),
    "anycastd.config.yamlfile.xǁReaderǁvalue__mutmut_9": (
        "`depth > MAX_DEPTH` -> `>=`: the composer keeps a file within MAX_DEPTH levels, so only an alias "
        "inside itself gets this deep, and it is refused with the same words one level sooner"
    ),
    **dict.fromkeys(
        [f"anycastd.config.yamlfile.xǁReaderǁdocument__mutmut_{n}" for n in (22, 23, 24)],
        "the code of a character YAML forbids: for text (which is all anycastd gives PyYAML) it reports the "
        "character as a number, so the branch for a str is never taken",
    ),
    "anycastd.config.yamlfile.xǁReaderǁdocument__mutmut_10": (
        "`mark is not None` -> `or True`: every MarkedYAMLError PyYAML raises while composing carries a mark"
    ),
    "anycastd.config.yamlfile.xǁReaderǁdocument__mutmut_39": (
        "the root's depth 0 -> 1: the composer keeps a file within MAX_DEPTH levels, so a value's depth stays "
        "at or under MAX_DEPTH either way; only an alias inside itself goes deeper, refused the same way"
    ),
    **dict.fromkeys(
        [f"anycastd.config.yamlfile.xǁ_Composerǁcompose_node__mutmut_{n}" for n in (24, 25)],
        "PyYAML uses a node's parent and index only for path-based resolvers, and none is registered",
    ),
    "anycastd.config.yamlfile.xǁReaderǁ__init____mutmut_8": (
        "the stream of the loader kept only for its scalar constructors: it is never read"
    ),
    "anycastd.core.damping.xǁDampingǁ__init____mutmut_5": (
        "the first `_at` 0.0 -> 1.0: the penalty starts at 0, and 0 decays to 0 from any time; the first "
        "failure sets `_at`"
    ),
    "anycastd.core.health.xǁServiceHealthǁforgive__mutmut_6": (
        "forgive's `now` -> None: clearing leaves nothing suppressed, so update() never reads the time, and "
        "forgive never changes the state, so no transition is stamped with it"
    ),
}


def outcomes() -> dict[str, str]:
    """Every mutant mutmut knows of, with its status (killed, survived, timeout, ...)."""
    argv = [sys.executable, "-m", "mutmut", "results", "--all", "true"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        found[name] = status
    return found


def main() -> int:
    everything = outcomes()
    if not everything or all(status == "not checked" for status in everything.values()):
        print("mutation: mutmut produced no results; run `.venv/bin/python -m mutmut run` to see why")
        return 1
    found = {name: s for name, s in everything.items() if s in ("survived", "no tests", "suspicious")}
    unexplained = {name: status for name, status in found.items() if name not in EQUIVALENT}
    for name, why in EQUIVALENT.items():
        print(f"equivalent  {name}: {why}")
    for name, status in unexplained.items():
        diff = subprocess.run(
            [sys.executable, "-m", "mutmut", "show", name], check=False, capture_output=True, text=True
        ).stdout
        change = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        print(f"UNEXPLAINED {name} ({status}): {' / '.join(c.strip() for c in change)}")
    stale = [name for name in EQUIVALENT if name not in found]
    for name in stale:
        print(f"stale       {name}: listed as equivalent but no longer survives (remove it)")
    counts = {status: list(everything.values()).count(status) for status in sorted(set(everything.values()))}
    print(f"mutation: {len(everything)} mutants ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    print(f"mutation: {len(unexplained)} unexplained survivor(s), {len(EQUIVALENT) - len(stale)} equivalent")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
