"""Ptys that stand in for serial ports: raw, held open, or pluggable behind a path.

- ``open_pty()``: a raw pty whose slave the code under test opens by path;
- ``HeldPty``: the slave end held open here too, so the line survives the
  other side closing and reopening it (a gateway restart);
- ``Pty``: a device behind a fixed path (a symlink) that can be unplugged and
  plugged in again as a new tty, as a USB radio re-enumerates.

``NullModem`` (tools/rig/nullmodem.py) joins two ptys back to back.
"""

from __future__ import annotations

import contextlib
import os
import time
import tty
from pathlib import Path


def open_pty() -> tuple[int, str]:
    """A raw pty: (master fd, slave path). The slave fd is closed; the user opens the path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    return master, path


class HeldPty:
    """A raw pty whose slave stays open here, with a non-blocking master.

    Holding the slave keeps reads on the master from failing with EIO while the
    program under test closes and reopens ``path``.
    """

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)

    def write(self, data: bytes, patience_s: float = 0.3) -> bool:
        """Write ``data`` to the line; False (rest dropped) when nobody read for
        ``patience_s`` or the line broke, as a UART drops what no one takes."""
        view = memoryview(data)
        deadline = time.monotonic() + patience_s
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)
            except OSError:
                return False
        return True

    def close(self) -> None:
        """Close both ends."""
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class Pty:
    """A serial device behind a path the config names (a symlink), unpluggable."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        """A new pty (as a re-enumerated USB device) behind the same path."""
        master, target = open_pty()
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)              # left by a run that was killed
        os.symlink(target, tmp)
        os.replace(tmp, self.link)
        self.master = master

    def unplug(self) -> None:
        """The device disappears: the pty closes and the path goes away."""
        os.close(self.master)
        self.master = -1
        os.unlink(self.link)

    def write(self, data: bytes) -> None:
        """Bytes from the device to the program that opened the path."""
        os.write(self.master, data)

    def close(self) -> None:
        """Close what is still open, and remove the path with it.

        The kernel hands a closed pty's number to the next pty opened, in any test
        running beside this one: a process still following a path left behind
        (a source reopening its link) would read and write that other test's line.
        """
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
