# anycastd: `make test` and `make demo` set everything up on a fresh Debian 12 machine (as root).

# Debian's own Python where there is one: the interpreter operators run anycastd with, and one every
# user can execute (tests/integration/test_privilege_lab.py runs the sidecar as an unprivileged user).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := frr unbound bind9 bind9-utils bind9-dnsutils nftables iproute2 procps python3-venv systemd util-linux prometheus openssl ca-certificates

DEB_BUILD_PACKAGES := build-essential debhelper dh-virtualenv python3.11-venv lintian git

.PHONY: deps deb-deps deb package-test release grafana venv lock dist cli-files install-cli-files lint test fuzz mutation unit integration demo bench bench-quick bench-sidecar reliability clean

deps:
	./scripts/install-debian-packages.sh $(DEBIAN_PACKAGES)

# Every version is pinned by constraints.txt; `make lock` moves them to the newest pyproject.toml allows.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

LOCK_VENV := build/lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[test,bench]'
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

# What operators install (docs/operations.md): the sdist and a wheel built from it, in dist/.
dist: venv
	$(PY) -m build --outdir dist .

# The Debian package anycastd-dns (debian/; docs/packaging.md): built with dh-virtualenv from the tracked files
# (and new ones not ignored) copied to build/deb/src, checked with lintian, written to dist/. DEB_VERSION builds
# another version of the same tree (the upgrade test's "next release"): anycastd's own version changes with it.
deb-deps:
	./scripts/install-debian-packages.sh $(DEB_BUILD_PACKAGES)

deb: deb-deps
	rm -rf build/deb && mkdir -p build/deb/src dist
	git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C build/deb/src
	$(if $(DEB_VERSION),sed -i 's/^__version__ = .*/__version__ = "$(DEB_VERSION)"/' build/deb/src/anycastd/__init__.py)
	$(PYTHON) build/deb/src/scripts/debian_changelog.py > build/deb/src/debian/changelog
	cd build/deb/src && dpkg-buildpackage -b -us -uc
	lintian --fail-on error,warning --info --display-info build/deb/*.changes >build/deb/lintian.txt; \
		status=$$?; cat build/deb/lintian.txt; exit $$status
	cp build/deb/anycastd-dns_*.deb dist/

# A release: checks that the version is written once and said everywhere, the changelog's dated section, the
# compatibility corpus (tests/compat), a clean tree, then builds the package and tags vVERSION (docs/packaging.md).
release: venv
	$(PY) scripts/release.py $(VERSION)

# Install, check, upgrade and purge the package on this machine (as root): tests/package/test_deb.py.
package-test: deb venv
	ANYCASTD_PACKAGE_TEST=1 $(PY) -m pytest -p no:cacheprovider tests/package

# Man pages and bash/zsh completion from the argument parsers, into packaging/ (committed; a test checks
# they are current). install-cli-files puts them where man, bash and zsh look (PREFIX=/usr/local).
PREFIX ?= /usr/local
cli-files: venv
	$(PY) scripts/cli_files.py packaging

# The Grafana dashboard, packaging/grafana/anycastd.json, from its panel list (a test checks it is current).
grafana: venv
	$(PY) scripts/grafana_dashboard.py

install-cli-files:
	install -D -m 644 packaging/man/anycastd.1 $(DESTDIR)$(PREFIX)/share/man/man1/anycastd.1
	install -D -m 644 packaging/man/anycastctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/anycastctl.1
	install -D -m 644 packaging/completion/anycastd.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/anycastd
	install -D -m 644 packaging/completion/anycastctl.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/anycastctl
	install -D -m 644 packaging/completion/_anycastd $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_anycastd
	install -D -m 644 packaging/completion/_anycastctl $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_anycastctl

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy anycastd anycastd_lab tests bench

# One pytest run: unit tests everywhere, integration tests as root (they skip, saying why, otherwise).
# The health core, flap damping, zone freshness, degradation and the sweep must keep 100% branch coverage.
test: deps venv lint
	$(PY) -m pytest --cov=anycastd.core.health --cov=anycastd.core.damping --cov=anycastd.core.serials --cov=anycastd.core.degradation --cov=anycastd.core.sweep --cov-branch --cov-report=term-missing --cov-fail-under=100 tests
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS)

# Mutation testing of the pure core and the configuration readers (mutmut: 4,440 mutants, 21 to 25 minutes on
# 2 cores; .ci/run calls it): every surviving mutant is killed by a named test or explained in tests/mutation.py,
# or this fails.
mutation: venv
	rm -rf mutants
	$(PY) -m mutmut run >/dev/null || true
	$(PY) -m tests.mutation

# A time-boxed mutational fuzz of every parser of untrusted input (config, control requests, state file).
FUZZ_SECONDS ?= 60
fuzz: venv
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS)

unit: venv
	$(PY) -m pytest tests/unit

integration: deps venv
	$(PY) -m pytest tests/integration

demo: deps venv
	$(PY) -m anycastd_lab.demo

# The benchmarks write docs/benchmarks.md. `make bench` (about 40 minutes) is anycastd beside
# exabgp healthcheck, the router-side variant, and fleet safety (every server failing, flapping);
# `make bench-quick` (under 8 minutes) is a smoke run of all three that writes nothing;
# `make bench-sidecar` adds the sidecar's finer breakdowns.
bench: deps venv
	$(PY) bench/triggers.py
	$(PY) bench/detection.py
	$(PY) bench/compare.py
	$(PY) bench/router.py
	$(PY) bench/ecmp.py
	$(PY) bench/ecmp_sidecar.py
	$(PY) bench/fleet.py
	$(PY) bench/bfd.py
	$(PY) bench/weights.py

bench-quick: deps venv
	$(PY) bench/triggers.py --trials 10 --no-write
	$(PY) bench/detection.py --quick
	$(PY) bench/compare.py --quick
	$(PY) bench/router.py --quick
	$(PY) bench/ecmp.py --servers 8 --trials 2 --flows 5000 --cpu-seconds 5 --load-trials 1 --no-write
	$(PY) bench/ecmp_sidecar.py --servers 4 --trials 2 --flows 5000 --cpu-seconds 5 --load-trials 1 --no-write
	$(PY) bench/fleet.py --quick
	$(PY) bench/bfd.py --quick
	$(PY) bench/weights.py --queries 3000 --rounds 1 --no-write
	$(PY) bench/startup.py --rounds 1 --runs 3 --no-write

bench-sidecar: deps venv
	$(PY) bench/failover.py
	$(PY) bench/resources.py
	$(PY) bench/drain.py
	$(PY) bench/restart.py
	$(PY) bench/freeze.py
	$(PY) bench/startup.py

# The fault matrix, three times over, into docs/reliability.md (about 5 minutes).
reliability: deps venv
	$(PY) bench/reliability.py --runs 3

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build dist
