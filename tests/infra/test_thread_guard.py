"""The thread-leak guard of tests/conftest.py sees the gateway's threads.

Every thread the gateway starts is named ``knute-*`` and most are daemons; the
guard fails a test that leaves such a thread running, daemon or not. Each case
is a real pytest run with tests/conftest.py as a plugin.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from tests.conftest import checked_thread, leaked_threads

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 15.0  # upper bound on any wait below; never a speed requirement


def run_pytest(folder: Path, source: str) -> subprocess.CompletedProcess[str]:
    """A real pytest run of ``source`` with tests/conftest.py as a plugin."""
    test_file = folder / "test_case.py"
    test_file.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-p", "no:xdist", "--rootdir", str(folder), "-q", str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_knute_daemon_threads_are_checked_and_other_daemons_are_not() -> None:
    stop = threading.Event()
    named = threading.Thread(target=stop.wait, name="knute-forgotten", daemon=True)
    other = threading.Thread(target=stop.wait, name="library-helper", daemon=True)
    before = set(threading.enumerate())
    named.start()
    other.start()
    try:
        assert checked_thread(named) and not checked_thread(other)
        assert leaked_threads(before, grace_s=0.2) == [named]
    finally:
        stop.set()
        named.join(WAIT_S)
        other.join(WAIT_S)
    assert leaked_threads(before, grace_s=0.2) == []


def test_guard_fails_the_test_that_leaks_a_knute_daemon_thread(tmp_path: Path) -> None:
    run = run_pytest(tmp_path, """
        import threading
        STOP = threading.Event()

        def test_leaks_a_daemon():
            threading.Thread(target=STOP.wait, args=(4,), name="knute-forgotten",
                             daemon=True).start()

        def test_other_daemons_are_the_library_s_business():
            threading.Thread(target=STOP.wait, args=(4,), name="paho-loop", daemon=True).start()
    """)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout, run.stdout
    assert "ERROR at teardown of test_leaks_a_daemon" in run.stdout
    assert "knute-forgotten (Event.wait)" in run.stdout


def test_guard_catches_a_gateway_component_left_running(tmp_path: Path) -> None:
    # A real gateway thread: the status server, started and never closed.
    run = run_pytest(tmp_path, """
        from knute.gateway.status import StatusServer

        def test_forgets_to_close(tmp_path):
            server = StatusServer(str(tmp_path / "status.sock"), lambda request: {})
            server.start()

        def test_closes(tmp_path):
            server = StatusServer(str(tmp_path / "status.sock"), lambda request: {})
            server.start()
            server.close()
    """)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout, run.stdout
    assert "ERROR at teardown of test_forgets_to_close" in run.stdout
    assert "knute-status (StatusServer._serve)" in run.stdout
