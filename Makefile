# One entry point for people and CI. Every target bootstraps what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := iproute2 keepalived nftables tcpdump iputils-ping util-linux procps systemd etcd-server etcd-client bird2 prometheus tshark
# programs whose absence means a Debian package is missing
DEB_PROGS := ip keepalived nft tcpdump ping nsenter pkill systemd-analyze etcd etcdctl bird birdc promtool tshark

.PHONY: test demo lint typecheck unit bench deps debs keepalived24 clean install uninstall

# The pure cores and simulations on two workers (CPU-bound), then the lab one test at a
# time: its tests judge timing (failover bounds, replies once), and two at a time on two
# cores made several of them flaky.
test: deps lint typecheck
	$(BIN)/pytest -n 2 tests/unit tests/sim
	$(BIN)/pytest tests/integration

demo: deps
	$(BIN)/vipcast demo

lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: deps
	$(BIN)/mypy --strict src/vipcast

unit: deps
	$(BIN)/pytest -n 2 tests/unit tests/sim

deps: debs $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages the suite uses, installed only when missing and only as root.
debs:
	@missing=0; for p in $(DEB_PROGS); do command -v $$p >/dev/null || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEBS)"; \
	    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	  else \
	    echo "some of $(DEBS) are missing; run as root to install them (tests that need them will skip)"; \
	  fi; \
	fi
	@# keepalived's, etcd's and BIRD's packages start services on install; the suite runs
	@# its own instances.
	@if [ "$$(id -u)" = 0 ] && command -v systemctl >/dev/null; then \
	  for s in keepalived etcd bird prometheus prometheus-node-exporter; do \
	    if systemctl is-active --quiet $$s 2>/dev/null; then systemctl stop $$s; fi; \
	  done; \
	fi

# keepalived 2.4.3 (auth_hmac, v3_checksum_as_v2) for the interop tests, built from
# ../shared/anchors (its build packages installed there; the tests' fixture runs it too).
SHARED ?= ../shared
keepalived24:
	@test -x $(SHARED)/anchors/build.sh || { echo "no $(SHARED)/anchors: the keepalived 2.4.3 tests will skip"; exit 0; }
	$(SHARED)/anchors/build.sh keepalived

bench: deps
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/failover.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info

# --- install: a self-contained virtualenv, the command on PATH, the unit, docs ------
# As root on Debian 12: `make install` (pip install into the system Python is refused
# there: PEP 668). Every path can be moved (the test installs under a temporary folder);
# DESTDIR stages the files for a package. The unit in packaging/ names the default
# paths; install writes it with the ones chosen here.
PREFIX ?= /opt/vipcast
BINDIR ?= /usr/local/bin
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
DOCDIR ?= /usr/share/doc/vipcast
SYSTEM_USER ?= vipcast
DOCS := README.md CHANGELOG.md docs/operations.md docs/protocol.md docs/architecture.md
UNIT_PATHS := -e 's|/usr/local/bin/vipcast|$(BINDIR)/vipcast|g' \
	-e 's|/etc/vipcast/|$(SYSCONFDIR)/vipcast/|g' -e 's|/usr/share/doc/vipcast|$(DOCDIR)|g'

install:
	test -x $(DESTDIR)$(PREFIX)/bin/python || $(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/python -m pip install --quiet --disable-pip-version-check .
	@# a staged venv must run from $(PREFIX): its scripts name their interpreter
	if [ -n "$(DESTDIR)" ]; then \
	  grep -lIr --null '$(DESTDIR)$(PREFIX)' $(DESTDIR)$(PREFIX)/bin | xargs -0r sed -i 's|$(DESTDIR)$(PREFIX)|$(PREFIX)|g'; \
	fi
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/vipcast
	ln -sfn $(PREFIX)/bin/vipcast $(DESTDIR)$(BINDIR)/vipcast
	sed $(UNIT_PATHS) packaging/vipcast.service > $(DESTDIR)$(UNITDIR)/vipcast.service
	chmod 644 $(DESTDIR)$(UNITDIR)/vipcast.service
	install -m 644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	install -m 644 packaging/prometheus/vipcast-rules.yml packaging/grafana/vipcast.json packaging/wireshark/vipcast.lua $(DESTDIR)$(DOCDIR)/
	install -m 644 examples/node.toml $(DESTDIR)$(SYSCONFDIR)/vipcast/node.toml.example
	@if [ -z "$(DESTDIR)" ] && [ -n "$(SYSTEM_USER)" ] && [ "$$(id -u)" = 0 ] && ! id -u $(SYSTEM_USER) >/dev/null 2>&1; then \
	  useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin $(SYSTEM_USER); \
	fi
	@echo "installed vipcast in $(PREFIX); next: write $(SYSCONFDIR)/vipcast/node.toml (from node.toml.example, keys with 'vipcast keygen'),"
	@echo "  vipcast check-config $(SYSCONFDIR)/vipcast/node.toml; systemctl daemon-reload; systemctl enable --now vipcast"

# Leaves $(SYSCONFDIR)/vipcast (configs and keys) and the $(SYSTEM_USER) user.
uninstall:
	rm -f $(DESTDIR)$(UNITDIR)/vipcast.service $(DESTDIR)$(SYSCONFDIR)/vipcast/node.toml.example
	if [ -L $(DESTDIR)$(BINDIR)/vipcast ]; then rm -f $(DESTDIR)$(BINDIR)/vipcast; fi
	rm -rf $(DESTDIR)$(DOCDIR)
	if [ -f $(DESTDIR)$(PREFIX)/pyvenv.cfg ]; then rm -rf $(DESTDIR)$(PREFIX); fi

# --- deb: the same install as a Debian package -----------------------------------------
# `make deb` (root not needed) writes $(DEB_DIR)/vipcast_<version>_<arch>.deb; install it
# with `apt install ./build/vipcast_*.deb`. What Debian owns gets Debian's paths (the
# command in /usr/bin, the unit in /lib/systemd/system: packages stay out of
# /usr/local); the virtualenv stays in /opt/vipcast (add-on software, as dh-virtualenv
# does), built with Debian's python3.X, which the package depends on.
.PHONY: deb
DEB_DIR ?= build
DEB_ROOT ?= $(DEB_DIR)/deb-root
DEB_COMPRESS ?= xz
DEB_PYTHON ?= $(shell readlink -f /usr/bin/python3)
DEB_MAINTAINER ?= vipcast developers <root@localhost>
DEB_VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_PATHS := PREFIX=/opt/vipcast BINDIR=/usr/bin UNITDIR=/lib/systemd/system \
	SYSCONFDIR=/etc DOCDIR=/usr/share/doc/vipcast

deb:
	rm -rf $(DEB_ROOT)
	@# no byte code from pip: build-deb.sh compiles it once, with the installed paths
	PIP_COMPILE=0 $(MAKE) --no-print-directory install DESTDIR=$(abspath $(DEB_ROOT)) $(DEB_PATHS) \
	  PYTHON=$(DEB_PYTHON) SYSTEM_USER= >/dev/null
	env $(DEB_PATHS) VERSION=$(DEB_VERSION) ARCH=$(DEB_ARCH) MAINTAINER='$(DEB_MAINTAINER)' \
	  COMPRESS=$(DEB_COMPRESS) packaging/debian/build-deb.sh $(DEB_ROOT) \
	  $(DEB_DIR)/vipcast_$(DEB_VERSION)_$(DEB_ARCH).deb
