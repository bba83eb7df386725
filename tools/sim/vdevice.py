"""A virtual MicroPython board behind a pseudo-terminal (``knute vdevice``).

The board is the real MicroPython unix port running ``tools/sim/vdevice_repl.py``,
which speaks the raw REPL, raw-paste mode and soft reset exactly as
``shared/runtime/pyexec.c`` does on a board, with its flash directory mounted
at "/". This module is the host side: it owns the pty, relays bytes between
the pty and the interpreter, turns a Ctrl-C from the host into SIGINT while
code runs (a board's UART interrupt; an interpreter that SIGINT leaves hanging
on one of its locks comes back as interrupted, see ``_wedged``), and starts a
fresh interpreter when the board soft-resets, so the pty stays open across
resets like a USB port. The real ``mpremote`` drives it as it drives a board::

    $ knute vdevice --flash /tmp/flash &
    /dev/pts/7
    $ mpremote connect /dev/pts/7 fs cp main.py : + exec "import os; print(os.listdir())"

Python API (tests and ``knute demo``)::

    with VirtualBoard(flash_dir) as board:
        subprocess.run(["mpremote", "connect", board.port, "fs", "ls"])

Two fault options make a board misbehave on purpose, to test the tools that
write to it: ``flash_size`` (writes fail with ENOSPC past that many bytes, and
``os.statvfs`` reports the small flash) and ``corrupt_writes`` (every write
lands with one bit flipped, so read-back checks fail).

``bits=32`` (``knute vdevice --bits 32``) runs the board on the 32-bit build of
the unix port (``tools.rig.upy``): a board's small-int range and object sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from knute.tools.rig import upy
from knute.tools.rig.ptys import open_pty

ROOT = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).resolve().parent / "vdevice_repl.py"
DEFAULT_HEAPSIZE = "256k"

# Exit codes of the board-side agent (tools/sim/vdevice_repl.py).
EXIT_RAW = 10
EXIT_FRIENDLY = 11

_QUEUE_CAP = 256 * 1024        # bytes buffered each way before applying back-pressure
_IDLE_POLL_MS = 50             # how often to look for a host while none is connected
_WEDGE_POLL_MS = 100           # silence after a Ctrl-C before looking for a hung interpreter
_CTRL_C = 0x03


def find_micropython(bits: int = 64) -> str:
    """The MicroPython unix port of ``bits`` bits (``tools.rig.upy.micropython``)."""
    return str(upy.micropython(bits))


def parse_size(text: str) -> int:
    """Bytes from '65536', '64k' or '2M'."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 65536, 64k, 2M)")
    value = int(match.group(1))
    unit = match.group(2).lower()
    return value * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]


class VirtualBoard:
    """A MicroPython board on a pty: the unix port, its own flash directory, soft resets.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    ``port`` is the pty path to hand to mpremote; ``flash_dir`` is the board's
    "/". When no flash directory is given a temporary one is made and removed
    on close (unless ``keep_flash``).
    """

    def __init__(
        self,
        flash_dir: str | Path | None = None,
        *,
        flash_size: int | None = None,
        corrupt_writes: bool = False,
        heapsize: str = DEFAULT_HEAPSIZE,
        binds: tuple[str, ...] = (),
        micropython: str | None = None,
        keep_flash: bool = False,
        bits: int = 64,
    ) -> None:
        self._own_flash = flash_dir is None
        self.flash_dir = Path(flash_dir) if flash_dir is not None else Path(
            tempfile.mkdtemp(prefix="knute-flash-"))
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.flash_dir = self.flash_dir.resolve()
        self.flash_size = flash_size
        self.corrupt_writes = corrupt_writes
        self.heapsize = heapsize
        self.binds = tuple(str(Path(b).resolve()) for b in binds)
        self.bits = bits
        self.micropython = micropython or find_micropython(bits)
        self.keep_flash = keep_flash
        self.port = ""
        self.boots = 0                  # interpreter starts (power-on + resets)
        self._master = -1
        self._stdin_r = -1
        self._stdin_w = -1
        self._wake_r = -1
        self._wake_w = -1
        self._child: subprocess.Popen[bytes] | None = None
        self._out_r = -1
        self._notes_r = -1
        self._note = b"X"
        self._friendly = True
        self._last_out = 0
        self._sigint_sent = False
        self._spawned_at = 0.0
        self._to_child = bytearray()
        self._to_host = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> VirtualBoard:
        """Open the pty, power the board on and start relaying; returns self."""
        # Raw (no echo or line editing until a host opens it); the slave is closed,
        # so POLLHUP on the master means "no host".
        master, self.port = open_pty()
        os.set_blocking(master, False)
        self._master = master
        self._stdin_r, self._stdin_w = os.pipe()
        os.set_blocking(self._stdin_w, False)
        self._wake_r, self._wake_w = os.pipe()
        self._spawn("friendly")
        self._thread = threading.Thread(target=self._run, name=f"vdevice {self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Power the board off: stop the interpreter, close the pty, remove a temp flash."""
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._kill_child()
        for name in ("_master", "_stdin_r", "_stdin_w", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        if self._own_flash and not self.keep_flash:
            shutil.rmtree(self.flash_dir, ignore_errors=True)

    @property
    def board_pid(self) -> int | None:
        """Process id of the interpreter that is the board right now."""
        child = self._child
        return child.pid if child is not None else None

    def info(self) -> dict[str, object]:
        """What `knute vdevice --json` prints: port, flash dir, pids."""
        return {"port": self.port, "flash": str(self.flash_dir), "pid": os.getpid(),
                "board_pid": self.board_pid, "flash_size": self.flash_size,
                "corrupt_writes": self.corrupt_writes, "bits": self.bits,
                "micropython": self.micropython}

    # ------------------------------------------------------------ the interpreter

    def _spawn(self, mode: str) -> None:
        notes_r, notes_w = os.pipe()
        out_r, out_w = os.pipe()
        cmd = [
            self.micropython, "-X", f"heapsize={self.heapsize}", str(AGENT),
            str(self.flash_dir), mode, str(notes_w),
            str(self.flash_size) if self.flash_size is not None else "-",
            "1" if self.corrupt_writes else "0", *self.binds,
        ]
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        try:
            self._child = subprocess.Popen(
                cmd, stdin=self._stdin_r, stdout=out_w, stderr=out_w, pass_fds=(notes_w,),
                cwd=self.flash_dir, env=env, start_new_session=True)
        finally:
            os.close(out_w)
            os.close(notes_w)
        os.set_blocking(out_r, False)
        os.set_blocking(notes_r, False)
        self._out_r = out_r
        self._notes_r = notes_r
        self._note = b"X"               # until the agent says it waits for input
        self._friendly = mode != "raw"
        self._sigint_sent = False
        self._spawned_at = time.monotonic()
        self.boots += 1

    def _kill_child(self) -> None:
        child = self._child
        if child is None:
            return
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            try:
                child.wait(timeout=3)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        for name in ("_out_r", "_notes_r"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def _read_notes(self) -> None:
        if self._notes_r < 0:
            return
        while True:
            try:
                data = os.read(self._notes_r, 256)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            for byte in data:
                note = bytes((byte,))
                if note in (b"I", b"X"):
                    self._note = note
                elif note == b"F":
                    self._friendly = True
                elif note == b"W":
                    self._friendly = False

    def _restart(self) -> None:
        """The interpreter ended: decide how the board comes back and start it."""
        child = self._child
        assert child is not None
        try:
            code = child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait(timeout=5)
        lived_s = time.monotonic() - self._spawned_at
        self._read_notes()
        self._kill_child()
        if self._stop.is_set():
            return
        pause_s = 0.0
        if code == EXIT_RAW:
            mode = "raw"            # mpremote's soft reset: no main.py, straight to raw REPL
        elif code == EXIT_FRIENDLY:
            mode = "friendly"
            if lived_s < 1.0:
                pause_s = 0.2       # a main.py that resets at once: do not spin
        elif self._sigint_sent:
            # Killed by a Ctrl-C before it could handle one (or by a second one):
            # come back as if main.py had been interrupted.
            mode = "interrupted"
        else:
            # Crashed: a hard reset, as a board's watchdog would do.
            mode = "friendly"
            pause_s = 0.5
        if pause_s and self._stop.wait(pause_s):
            return
        self._spawn(mode)

    # ------------------------------------------------------------ the relay

    def _wedged(self) -> bool:
        """Whether the interpreter hangs for good on a lock a Ctrl-C left held.

        Both unix port builds have threads without a GIL, and such a build raises
        KeyboardInterrupt straight from its SIGINT handler (MICROPY_ASYNC_KBD_INTR), in
        the middle of whatever C code runs. A Ctrl-C that lands while the interpreter
        holds one of its own locks (the qstr pool's, taken whenever code imports or
        interns a name: a deep-sleeping bench meter does it in a tight loop) leaves that
        lock held, and the next name it interns, the traceback's own, waits forever: no
        output, no prompt, and mpremote says the board "did not stop for Ctrl-C". A
        board raises its Ctrl-C between two bytecodes, never inside one, so the hang is
        the stand-in's own. One thread waiting on a futex has nobody to wake it.
        """
        child = self._child
        if child is None or child.poll() is not None:
            return False
        proc = Path("/proc") / str(child.pid)
        try:
            return (len(os.listdir(proc / "task")) == 1
                    and "futex" in (proc / "wchan").read_text())
        except OSError:
            return False

    def _host_connected(self) -> bool:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        return all(not events & select.POLLHUP for _fd, events in poller.poll(0))

    def _from_host(self, data: bytes) -> None:
        """Bytes the host wrote to the port: Ctrl-C becomes SIGINT while code runs."""
        start = 0
        while True:
            pos = data.find(_CTRL_C, start)
            if pos < 0:
                self._to_child += data[start:]
                return
            self._to_child += data[start:pos]
            self._read_notes()
            child = self._child
            if self._note == b"I" or child is None or child.poll() is not None:
                self._to_child.append(_CTRL_C)
            else:
                self._flush_to_child()
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGINT)
                self._sigint_sent = True
            start = pos + 1

    def _from_board(self, data: bytes, connected: bool) -> None:
        """Bytes the board printed: to the host, with print's "\\n" cooked in the friendly REPL."""
        self._read_notes()
        if not connected:
            self._last_out = data[-1] if data else self._last_out
            return
        if self._friendly:
            out = bytearray()
            prev = self._last_out
            for byte in data:
                if byte == 0x0A and prev != 0x0D:
                    out.append(0x0D)
                out.append(byte)
                prev = byte
            self._to_host += out
        else:
            self._to_host += data
        if data:
            self._last_out = data[-1]

    def _flush_to_child(self) -> None:
        if not self._to_child:
            return
        try:
            n = os.write(self._stdin_w, self._to_child)
        except BlockingIOError:
            return
        del self._to_child[:n]

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
        finally:
            self._kill_child()

    def _loop(self) -> None:
        while not self._stop.is_set():
            connected = self._host_connected()
            if not connected:
                self._to_host.clear()
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            if connected:
                mask = 0
                if len(self._to_child) < _QUEUE_CAP:
                    mask |= select.POLLIN
                if self._to_host:
                    mask |= select.POLLOUT
                poller.register(self._master, mask)
            if self._out_r >= 0 and len(self._to_host) < _QUEUE_CAP:
                poller.register(self._out_r, select.POLLIN)
            if self._notes_r >= 0:
                poller.register(self._notes_r, select.POLLIN)
            if self._to_child:
                poller.register(self._stdin_w, select.POLLOUT)
            timeout = None if connected else _IDLE_POLL_MS
            # After a Ctrl-C, silence while code runs may be a hung interpreter (_wedged):
            # the board then comes back as one killed by the Ctrl-C (_restart).
            watch = self._sigint_sent and self._note == b"X"
            if watch:
                timeout = _WEDGE_POLL_MS
            ready = poller.poll(timeout)
            if not ready and watch and self._wedged():
                child = self._child
                if child is not None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
            for fd, events in ready:
                if fd == self._wake_r:
                    return
                if fd == self._master:
                    if events & select.POLLHUP:
                        continue
                    if events & select.POLLIN:
                        try:
                            data = os.read(self._master, 4096)
                        except (BlockingIOError, InterruptedError):
                            data = b""
                        except OSError as exc:
                            if exc.errno != errno.EIO:
                                raise
                            data = b""
                        if data:
                            self._from_host(data)
                    if events & select.POLLOUT and self._to_host:
                        try:
                            n = os.write(self._master, self._to_host)
                            del self._to_host[:n]
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError as exc:
                            if exc.errno != errno.EIO:
                                raise
                elif fd == self._out_r:
                    try:
                        data = os.read(self._out_r, 65536)
                    except BlockingIOError:
                        continue
                    if data:
                        self._from_board(data, connected)
                    else:
                        self._restart()
                        break
                elif fd == self._notes_r:
                    self._read_notes()
                elif fd == self._stdin_w:
                    self._flush_to_child()
