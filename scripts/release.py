"""`make release VERSION=x.y.z`: check that everything says the same version, then tag it.

Checks, each naming what to fix:
- VERSION is x.y.z;
- anycastd/__init__.py says it (the one place the version is written: the wheel, both commands'
  --version, the build-info metric, the status document and the Debian package read it there);
- CHANGELOG.md has a dated section for it (`## [x.y.z] - YYYY-MM-DD`) under [Unreleased];
- tests/compat/x.y.z holds its requests, replies and state files (written here when missing, to commit);
- the working tree is clean and the tag vx.y.z is new;
- the Debian package built from the tree (`make deb`) has that version.
Then `git tag -a vx.y.z`. With --dry-run, everything but the tag.

Usage: python scripts/release.py VERSION [--dry-run]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from debian_changelog import sections  # noqa: E402

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)\Z")


def version_problems(version: str, init_text: str, changelog: str, corpora: set[str]) -> list[str]:
    """What stands between the tree and a release of ``version`` (pure: the texts are given)."""
    if not SEMVER.match(version):
        return [f"VERSION must be MAJOR.MINOR.PATCH (semantic versioning), got {version!r}"]
    problems = []
    written = re.search(r'^__version__ = "([^"]*)"$', init_text, re.MULTILINE)
    if written is None or written[1] != version:
        found = written[1] if written else "nothing"
        problems.append(f'anycastd/__init__.py says {found}: set __version__ = "{version}" there')
    found = sections(changelog)  # read as the package's changelog is written from it
    names = [section.version for section in found]
    dated = [section.version for section in found if section.date]
    if version not in names:
        problems.append(f"CHANGELOG.md has no section ## [{version}] - YYYY-MM-DD: move [Unreleased]'s entries there")
    elif version not in dated:
        problems.append(f"CHANGELOG.md's section [{version}] has no date: ## [{version}] - YYYY-MM-DD")
    elif names[0] != "Unreleased" or names[1] != version:
        problems.append(
            f"CHANGELOG.md: [{version}] must come right after an (empty) [Unreleased] section, newest first"
        )
    if version not in corpora:
        problems.append(f"tests/compat/{version} is missing: scripts/compat_corpus.py writes it; commit it")
    return problems


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("git") or "git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version")
    parser.add_argument("--dry-run", action="store_true", help="check and build, but do not tag")
    args = parser.parse_args(argv)
    version = args.version
    compat = ROOT / "tests" / "compat"
    if SEMVER.match(version) and not (compat / version).is_dir():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "compat_corpus.py"), version], check=True)
    problems = version_problems(
        version,
        (ROOT / "anycastd" / "__init__.py").read_text(),
        (ROOT / "CHANGELOG.md").read_text(),
        {p.name for p in compat.iterdir() if p.is_dir()},
    )
    if git("status", "--porcelain").stdout.strip():
        problems.append("the working tree has changes: commit them (git status)")
    if git("rev-parse", "-q", "--verify", f"refs/tags/v{version}").returncode == 0:
        problems.append(f"the tag v{version} exists already")
    if problems:
        for problem in problems:
            print(f"release: {problem}", file=sys.stderr)
        return 1
    subprocess.run([shutil.which("make") or "make", "-C", str(ROOT), "deb"], check=True)
    built = sorted((ROOT / "dist").glob(f"anycastd-dns_{version}_*.deb"))
    if not built:
        print(f"release: make deb built no anycastd-dns {version}", file=sys.stderr)
        return 1
    dpkg_deb = shutil.which("dpkg-deb") or "dpkg-deb"
    package = subprocess.run([dpkg_deb, "-f", str(built[-1]), "Version"], capture_output=True, text=True, check=True)
    if package.stdout.strip() != version:
        print(f"release: the package says {package.stdout.strip()}, not {version}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"release: {version} is ready (dry run: not tagged)")
        return 0
    tagged = git("tag", "-a", f"v{version}", "-m", f"anycastd {version}")
    if tagged.returncode != 0:
        print(f"release: git tag failed: {tagged.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"release: tagged v{version}; push it with `git push origin v{version}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
