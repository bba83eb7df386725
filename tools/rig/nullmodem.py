"""Two ptys joined back to back, like a null-modem cable between two serial ports.

A node on the bench opens one end (``a_path``) as its UART, the gateway the
other (``b_path``) as its serial source; a thread copies bytes both ways.
Both slave ends are held open here, so either side may close and reopen its
end (a node reboot, a gateway restart) without the line going dead.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty


class NullModem:
    """Two pty slave paths whose traffic is relayed to each other."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        masters = []
        paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            paths.append(os.ttyname(slave))
            masters.append(master)
            self._fds += [master, slave]
        self.a_path, self.b_path = paths
        self._a, self._b = masters
        self.relayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nullmodem", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peer = {self._a: self._b, self._b: self._a}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(peer), [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    if data:
                        os.write(peer[fd], data)
                        self.relayed += len(data)
                except OSError:     # one side closed for a moment (a program reopening)
                    time.sleep(0.01)

    def close(self) -> None:
        """Stop relaying and close both ptys."""
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> NullModem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
