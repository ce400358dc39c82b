# Smart shelf: `make test` bootstraps everything on a fresh machine and runs every check.
# Idempotent: a second run only re-installs what changed (stamp files track pyproject/package-lock).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STUBS_VERSION := 1.27.0.post1
STDLIB_STUBS_VERSION := 1.27.0.post2
PORTS := esp32 rp2
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: all bootstrap browser service-tools fleet-servers test check lint format typecheck mpy-check pytest bench demo clean help
DURATION ?=
LINK ?= serial

all: test

help:
	@echo "make demo       emulated shelves -> hub -> SQLite ledger, live (DURATION=90: stop and compare with the truth;"
	@echo "                LINK=ble: the nodes on Bluetooth LE, through a real BLE host stack on an emulated air)"
	@echo "make test       bootstrap (venv, npm, stubs) then lint, type checks, mpy-cross and all tests"
	@echo "make bootstrap  install everything the project needs (idempotent; Debian's chromium for the browser tests,"
	@echo "                mosquitto and postgresql for the fleet tests)"
	@echo "make pytest     only the test suite (PYTEST_ARGS=... to pass options, PYTEST_WORKERS=0 for one process)"
	@echo "make bench      protocol (CPython vs MicroPython), sensing-accuracy, hub ingest, BLE link, status-page, flash, RFID and fleet benchmarks"

bootstrap: $(VENV)/.stamp node_modules/.stamp $(foreach p,$(PORTS),.stubs/$(p)/.stamp) browser service-tools \
	fleet-servers

# The browser tests drive Debian's chromium (/usr/bin/chromium) with Playwright's Python package (a dev dependency);
# Playwright's own browser download is never used. Installed with apt-get when missing (root or passwordless sudo).
browser:
	@tools/bootstrap/install-chromium.sh

# The service tests check the hub's systemd unit and udev rules with systemd-analyze and udevadm (apt-get when missing).
service-tools:
	@tools/bootstrap/install-service-tools.sh

# The fleet tests, the fault test and `smartshelf bench fleet` start their own Mosquitto and PostgreSQL on loopback
# (tools/servers/): Debian's mosquitto and postgresql, installed with apt-get when missing (root or passwordless sudo).
fleet-servers:
	@tools/bootstrap/install-fleet-servers.sh

# The hub (with its dev extra) and the developer tools, a distribution of their own (tools/pyproject.toml).
$(VENV)/.stamp: pyproject.toml tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' -e ./tools
	@touch $@

node_modules/.stamp: package.json package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || tools/bootstrap/install-node.sh
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.stubs/%/.stamp: Makefile $(VENV)/.stamp
	rm -rf .stubs/$*
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --target .stubs/$* \
		micropython-$*-stubs==$(STUBS_VERSION) micropython-stdlib-stubs==$(STDLIB_STUBS_VERSION)
	@touch $@

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.stamp
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: bootstrap
	$(VENV)/bin/mypy hub shared_protocol tools
	$(PY) -m tools.typecheck.micropython_ports

mpy-check: $(VENV)/.stamp
	$(PY) -m tools.mpy_compile_check

# On two pytest-xdist workers (PYTEST_WORKERS=0: all in this process; tests/xdist_support.py): the real-time tests
# (slow marker, benchmarks) one at a time on one worker, first, while the other takes the rest a module at a time,
# the modules in file order (xdist's default, most tests first, would leave the long test_flash.py for the end).
pytest: bootstrap
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

check: lint typecheck mpy-check

test: bootstrap check pytest

demo: bootstrap
	$(VENV)/bin/smartshelf demo --link $(LINK) $(if $(DURATION),--duration $(DURATION))

bench: bootstrap
	$(VENV)/bin/smartshelf bench protocol
	$(VENV)/bin/smartshelf bench sensing
	$(VENV)/bin/smartshelf bench hub
	$(VENV)/bin/smartshelf bench ble
	$(VENV)/bin/smartshelf bench web
	$(VENV)/bin/smartshelf bench flash
	$(VENV)/bin/smartshelf bench rfid
	$(VENV)/bin/smartshelf bench fleet

clean:
	rm -rf $(VENV) node_modules .stubs .mypy_cache .pytest_cache .ruff_cache .hypothesis
