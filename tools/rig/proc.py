"""Stopping a process the rig started: a signal, a bounded wait, then kill -9.

``GatewayProcess``, ``BackendProcess`` and ``Broker`` all stop their daemon the
same way: SIGTERM so it can flush and close cleanly, and SIGKILL only when it
has not exited in time (a hung shutdown must not hang the caller too).
"""

from __future__ import annotations

import signal
import subprocess

KILLED = -9              # the status ``terminate`` reports for a process it had to kill
KILL_TIMEOUT_S = 10.0    # after SIGKILL only the kernel is left to wait for


def terminate(proc: subprocess.Popen[bytes], timeout: float, *,
              sig: int = signal.SIGTERM, kill_timeout: float = KILL_TIMEOUT_S) -> int:
    """Send ``sig`` to ``proc`` if it still runs, wait up to ``timeout`` seconds, then kill -9.

    Returns the exit status (negative for a signal), or ``KILLED`` when it had to
    be killed. A process that has already exited is only reaped.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return int(proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=kill_timeout)
        return KILLED
