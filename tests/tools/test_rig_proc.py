"""The rig's one way to stop a daemon: SIGTERM, a bounded wait, then kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys

from knute.tools.rig.proc import KILLED, terminate

# Says "ready" once its SIGTERM disposition is set, so the signal cannot come too early.
CHILD = ("import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, {handler})\n"
         "print('ready', flush=True)\n"
         "time.sleep(120)\n")


def child(handler: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(handler=handler)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_a_process_that_obeys_sigterm_reports_its_own_exit() -> None:
    proc = child("lambda *_: sys.exit(3)")
    assert terminate(proc, timeout=60) == 3


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    proc = child("signal.SIG_IGN")
    assert terminate(proc, timeout=0.2) == KILLED
    assert proc.returncode == -signal.SIGKILL


def test_a_process_that_already_exited_is_only_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)"])
    proc.wait()
    assert terminate(proc, timeout=1) == 5


def test_another_signal_can_be_asked_for() -> None:
    proc = child("signal.SIG_IGN")
    assert terminate(proc, timeout=60, sig=signal.SIGKILL) == -signal.SIGKILL
