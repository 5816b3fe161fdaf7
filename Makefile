# One entry point for people and CI. Every target bootstraps what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := iproute2 keepalived nftables tcpdump iputils-ping util-linux procps systemd etcd-server etcd-client bird2
# programs whose absence means a Debian package is missing
DEB_PROGS := ip keepalived nft tcpdump ping nsenter pkill systemd-analyze etcd etcdctl bird birdc

.PHONY: test demo lint typecheck unit bench deps debs keepalived24 clean

test: deps lint typecheck
	$(BIN)/pytest

demo: deps
	$(BIN)/vipcast demo

lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: deps
	$(BIN)/mypy --strict src/vipcast

unit: deps
	$(BIN)/pytest tests/unit tests/sim

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
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	  else \
	    echo "some of $(DEBS) are missing; run as root to install them (tests that need them will skip)"; \
	  fi; \
	fi
	@# keepalived's, etcd's and BIRD's packages start services on install; the suite runs
	@# its own instances.
	@if [ "$$(id -u)" = 0 ] && command -v systemctl >/dev/null; then \
	  for s in keepalived etcd bird; do \
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
