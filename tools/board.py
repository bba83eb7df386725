"""A MicroPython board on a serial port, and the steps ``knute provision`` takes on it.

One primitive, ``Board.exec`` (run code in the raw REPL over mpremote's serial
transport), and every step built on it: what the board says about itself
(``BoardInfo``), reading and writing files, clearing the old library, checking
free flash, verifying what was written by a SHA-256 computed on the board,
and reading the node's boot report from its console (``Board.watch_boot``,
``BootWatch``). Every board failure becomes one ``KnuteError`` that says what
to do. The LoRa drivers a config needs on the board: tools.lora_drivers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError

# The folder that holds firmware/ and protocol/ as a board's /lib holds them: the
# repository root in a checkout, the knute package folder in an installed wheel.
BOARD_LIB = Path(__file__).resolve().parents[1]


def board_import(name: str) -> Any:
    """Import a firmware module as a board does, with ``firmware`` and ``protocol`` top-level.

    The firmware's own checks (config validation, pin maps, its version) run on
    CPython too, so that a technician hears about a bad config before the
    board does; they import ``protocol`` and ``firmware`` by the names the
    board's flash gives them, not as ``knute.firmware``.
    """
    import importlib

    if name != "firmware" and not name.startswith("firmware."):
        raise ValueError(f"not a firmware module: {name}")
    lib = str(BOARD_LIB)
    added = lib not in sys.path
    if added:
        sys.path.insert(0, lib)
    try:
        return importlib.import_module(name)
    finally:
        if added:
            sys.path.remove(lib)


DEFAULT_TIMEOUT_S = 5.0
WRITE_CHUNK = 512              # bytes per write on the board (mpremote uses 256)

# sys.implementation._mpy: bits 0-7 .mpy version, 8-9 sub-version, 10+ native arch
# (MicroPython py/persistentcode.h, MPY_FEATURE_ENCODE_ARCH); arch names as mpy-cross
# spells them for -march.
MPY_ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
              "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")

@dataclass
class BoardInfo:
    """What a board says about itself."""

    platform: str
    machine: str
    version: str
    mpy: int | None
    hashlib: bool
    free_bytes: int | None

    @property
    def mpy_version(self) -> str | None:
        """'6.3' style .mpy version, or None when the board cannot load .mpy."""
        if self.mpy is None:
            return None
        major = self.mpy & 0xFF
        sub = (self.mpy >> 8) & 3
        return f"{major}.{sub}" if sub else str(major)

    @property
    def arch(self) -> str | None:
        """mpy-cross -march name of the board's native code, if any."""
        if self.mpy is None:
            return None
        index = self.mpy >> 10
        return MPY_ARCHES[index] if index < len(MPY_ARCHES) else None

    @property
    def board_name(self) -> str:
        """Default config "board" value: "unix" for the unix port, else the platform."""
        return "unix" if self.platform in ("linux", "darwin") else self.platform


@dataclass
class FileToCopy:
    """One file for the flash: its path on the board and its bytes."""

    dest: str
    data: bytes
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()


# ---------------------------------------------------------------- the board


class Board:
    """A MicroPython board on a serial port, through mpremote's serial transport.

    Every board error becomes a KnuteError that says what to do.
    """

    def __init__(self, port: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self._transport: Any = None

    def __enter__(self) -> Board:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the port and enter the raw REPL after a soft reset (stops main.py)."""
        from mpremote.transport import TransportError  # type: ignore[import-untyped]
        from mpremote.transport_serial import SerialTransport  # type: ignore[import-untyped]

        if "://" not in self.port and not os.path.exists(self.port):
            raise KnuteError(f"no such port {self.port}: is the board plugged in? "
                             "(look in /dev/ttyACM*, /dev/ttyUSB*)")
        try:
            self._transport = SerialTransport(self.port, baudrate=115200, timeout=1.0)
        except TransportError as exc:
            raise KnuteError(f"cannot open {self.port} ({exc}): is another program "
                             "(mpremote, a terminal) using it?") from None
        # mpremote gives up on the raw REPL after 10 s without a byte, whatever the
        # overall bound: a board still busy when its Ctrl-C arrived (a slow soft reset,
        # a loaded host) is asked again until --timeout has passed.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                # mpremote prints what it got when it fails: keep that off our output.
                with contextlib.redirect_stdout(io.StringIO()):
                    self._transport.enter_raw_repl(
                        soft_reset=True, timeout_overall=max(deadline - time.monotonic(), 1.0))
                return
            except (TransportError, OSError) as exc:
                if isinstance(exc, TransportError) and deadline - time.monotonic() > 1.0:
                    continue
                self.close()
                raise KnuteError(f"no MicroPython answers on {self.port} ({exc}): flash "
                                 "MicroPython on the board, or press its reset button and "
                                 "retry") from None

    def close(self) -> None:
        """Leave the raw REPL and close the port."""
        transport = self._transport
        self._transport = None
        if transport is None:
            return
        with contextlib.suppress(Exception):
            if transport.in_raw_repl:
                transport.exit_raw_repl()
        with contextlib.suppress(Exception):
            transport.close()

    def exec(self, code: str) -> bytes:
        """Run code on the board and return what it printed; KnuteError on a traceback."""
        from mpremote.transport import TransportError, TransportExecError

        try:
            return bytes(self._transport.exec(code))
        except TransportExecError as exc:
            last = exc.error_output.strip().splitlines()[-1:] or ["?"]
            raise BoardError(last[0], exc.error_output) from None
        except (TransportError, OSError) as exc:
            raise KnuteError(f"lost the board on {self.port} ({exc}): check the cable "
                             "and retry") from None

    def eval(self, expr: str) -> Any:
        """The Python literal value of an expression evaluated on the board."""
        import ast

        return ast.literal_eval(self.exec(f"print(repr({expr}))").decode().strip())

    def info(self) -> BoardInfo:
        """Platform, versions, .mpy support, hashlib and free flash of the board."""
        raw = self.eval_script(
            "import sys, os\n"
            "try:\n s = os.statvfs('/')\n free = s[0] * s[3]\n"
            "except (AttributeError, OSError):\n free = None\n"
            "print(repr((sys.platform, getattr(sys.implementation, '_machine', ''), "
            "sys.version, getattr(sys.implementation, '_mpy', None), free)))\n")
        return BoardInfo(platform=str(raw[0]), machine=str(raw[1]), version=str(raw[2]),
                         mpy=raw[3], hashlib=self._has_sha256(), free_bytes=raw[4])

    def eval_script(self, code: str) -> Any:
        """The Python literal a script prints (its last line) on the board."""
        import ast

        lines = self.exec(code).decode().strip().splitlines()
        return ast.literal_eval(lines[-1]) if lines else None

    def _has_sha256(self) -> bool:
        try:
            self.exec("import hashlib\nhashlib.sha256")
        except BoardError:
            return False
        return True

    def read_file(self, path: str) -> bytes | None:
        """A file's bytes, or None when there is no such file."""
        try:
            return self._fs("readfile", path)
        except FileNotFoundError:
            return None

    def write_file(self, path: str, data: bytes) -> None:
        """Write one file (OSError from the board as OSError)."""
        self._fs("writefile", path, data)

    def _fs(self, op: str, path: str, data: bytes | None = None) -> bytes:
        from mpremote.transport import TransportError

        try:
            if op == "readfile":
                return bytes(self._transport.fs_readfile(path, chunk_size=WRITE_CHUNK))
            self._transport.fs_writefile(path, data, chunk_size=WRITE_CHUNK)
            return b""
        except TransportError as exc:
            raise KnuteError(f"lost the board on {self.port} ({exc}): check the cable "
                             "and retry") from None

    def soft_reset_to_run(self) -> None:
        """Leave the raw REPL and soft-reset so the board boots main.py (the node)."""
        transport = self._transport
        if transport is None:
            return
        with contextlib.suppress(Exception):
            transport.exit_raw_repl()
            transport.serial.write(b"\x04")
            transport.serial.flush()
            # Wait for the board to say it rebooted before the port is closed: bytes
            # still unread on a USB-serial or pty link when the host closes it can be
            # dropped, and the board would sit in the REPL instead of running the node.
            # As long as the board is given to answer (--timeout): a board slow to
            # reset (a virtual one on a loaded host) must not have its Ctrl-D dropped.
            wait_s = max(self.timeout_s, 5.0)
            transport.read_until(1, b"soft reboot", timeout=wait_s, timeout_overall=wait_s)

    def watch_boot(self, device_id: int, timeout_s: float) -> list[str]:
        """Read the console of the booting node until its boot report; the lines read.

        Call after soft_reset_to_run(). KnuteError when the node goes into safe mode,
        crashes, waits for its supply, boots with another device id or says nothing
        in ``timeout_s`` seconds.
        """
        transport = self._transport
        if transport is None:
            raise KnuteError(f"no board on {self.port}")
        watch = BootWatch(device_id)
        pending = b""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                waiting = transport.serial.in_waiting
                chunk = transport.serial.read(waiting or 1)
                if not chunk:
                    continue
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    if watch.feed(raw.decode(errors="replace").rstrip("\r")):
                        return watch.lines
        except OSError as exc:
            raise KnuteError(f"lost the board on {self.port} while it booted ({exc}): check "
                             "the cable and retry; nothing was registered") from None
        if pending:
            watch.feed(pending.decode(errors="replace").rstrip("\r"))
        raise KnuteError(watch.timeout_message(timeout_s))

    def stop_node(self) -> None:
        """Interrupt the running node (Ctrl-C) and take the raw REPL again."""
        from mpremote.transport import TransportError

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._transport.enter_raw_repl(soft_reset=False,
                                               timeout_overall=self.timeout_s)
        except (TransportError, OSError) as exc:
            raise KnuteError(f"the node on {self.port} did not stop for Ctrl-C ({exc}): "
                             "press the board's reset button") from None


class BootWatch:
    """The node's boot report, read from its console one line at a time.

    The firmware prints ``knute: boot role=R device=D ...`` once its link is up and
    ``knute: heap: N bytes used, M free after boot`` once its role has started: the
    node runs. ``knute: SAFE MODE: <reason>`` means it will not; a traceback means
    it crashed. feed() returns True at the boot report and raises KnuteError at a
    failure.
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.lines: list[str] = []
        self.booted_as: str | None = None       # the device id of the boot line
        self._traceback = False

    def feed(self, line: str) -> bool:
        """Take one console line; True once the node reported a completed boot."""
        self.lines.append(line)
        text = line.strip()
        if self._traceback:
            if text and not line.startswith(" ") and not text.startswith("Traceback"):
                raise KnuteError(f"the node crashed while booting ({text}): nothing was "
                                 "registered; see the console with `mpremote repl`")
            return False
        if text.startswith("Traceback (most recent call last)"):
            self._traceback = True
        elif text.startswith("knute: SAFE MODE: "):
            reason = text[len("knute: SAFE MODE: "):]
            raise KnuteError(f"the node booted into SAFE MODE: {reason}; nothing was "
                             "registered")
        elif text.startswith("knute: supply low"):
            raise KnuteError(f"the node waits for its supply ({text[7:]}): charge or "
                             "change the battery and provision again; nothing was registered")
        elif text.startswith("knute: boot role="):
            fields = {key: value for key, _, value in
                      (part.partition("=") for part in text[7:].split())}
            self.booted_as = fields.get("device", "")
            if self.booted_as != f"{self.device_id:08x}":
                raise KnuteError(f"the node booted as device {self.booted_as}, not "
                                 f"{self.device_id:08x}: its config.json was not replaced; "
                                 "erase the flash and provision again")
        elif text.startswith("knute: heap: ") and self.booted_as is not None:
            return True
        return False

    def timeout_message(self, timeout_s: float) -> str:
        """The one-line error when no boot report came in time."""
        said = [line.strip() for line in self.lines if line.strip()]
        last = f" (its last line: {said[-1]})" if said else " (it printed nothing)"
        return (f"the node did not report a completed boot within {timeout_s:g} s{last}: "
                "nothing was registered; check its wiring and config, or give it longer "
                "with --boot-timeout")


class BoardError(KnuteError):
    """Code run on the board raised; ``traceback`` holds the board's whole report."""

    def __init__(self, line: str, traceback: str) -> None:
        super().__init__(line)
        self.traceback = traceback


# ---------------------------------------------------------------- steps on the board


_RMTREE = """
import os
def _rm(p):
    try:
        entries = list(os.ilistdir(p))
    except OSError:
        return
    for e in entries:
        q = p + '/' + e[0]
        if e[1] == 0x4000:
            _rm(q)
        else:
            os.remove(q)
    os.rmdir(p)
"""

_HASHES = """
import hashlib, binascii
def _h(p):
    h = hashlib.sha256()
    b = bytearray(256)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(b[:n])
    return binascii.hexlify(h.digest()).decode()
"""


def prepare_dirs(board: Board, files: list[FileToCopy]) -> None:
    """Remove old /lib/protocol and /lib/firmware (stale .py would shadow .mpy), make dirs."""
    dirs: set[str] = set()
    for item in files:
        parts = item.dest.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            dirs.add("/" + "/".join(parts[:depth]))
    code = _RMTREE + "_rm('/lib/protocol')\n_rm('/lib/firmware')\n"
    for path in sorted(dirs, key=lambda p: (p.count("/"), p)):
        code += f"try:\n os.mkdir({path!r})\nexcept OSError as e:\n if e.args[0] != 17: raise\n"
    board.exec(code)


def check_space(board: Board, files: list[FileToCopy]) -> None:
    """KnuteError when the files cannot fit in the board's free flash (whole blocks)."""
    raw = board.eval_script(
        "import os\ntry:\n s = os.statvfs('/')\n print((s[0], s[0] * s[3]))\n"
        "except (AttributeError, OSError):\n print(None)\n")
    if raw is None:
        return
    block, free = int(raw[0]) or 1, int(raw[1])
    for name in ("/main.py", "/config.json"):
        with contextlib.suppress(KnuteError):
            size = board.eval_script(f"import os\nprint(os.stat({name!r})[6])")
            free += -(-int(size) // block) * block
    need = sum(-(-len(f.data) // block) * block for f in files)
    if need > free:
        raise KnuteError(f"the board's flash is full ({free} bytes free, {need} needed): "
                         "remove files with `mpremote fs rm` or erase the flash, then "
                         "provision again")


def copy_files(board: Board, files: list[FileToCopy],
               progress: Callable[[int, int], None] | None = None) -> None:
    """Write every file; a full flash or a failed write becomes one KnuteError."""
    total = sum(len(f.data) for f in files)
    done = 0
    for item in files:
        try:
            board.write_file(item.dest, item.data)
        except OSError as exc:
            if exc.errno == 28:
                raise KnuteError(f"the board's flash is full (writing {item.dest}): remove "
                                 "files with `mpremote fs rm` or erase the flash, then "
                                 "provision again") from None
            raise KnuteError(f"writing {item.dest} failed ({exc}): the board's filesystem "
                             "may be damaged; erase the flash and provision again") from None
        done += len(item.data)
        if progress is not None:
            progress(done, total)


def verify_files(board: Board, info: BoardInfo, files: list[FileToCopy]) -> str:
    """Read every file back (SHA-256 on the board, else the bytes); returns the method."""
    if info.hashlib:
        board.exec(_HASHES)
        for start in range(0, len(files), 8):
            batch = files[start:start + 8]
            got = board.eval("[" + ",".join(f"_h({f.dest!r})" for f in batch) + "]")
            for item, digest in zip(batch, got, strict=True):
                if digest != item.sha256:
                    raise KnuteError(f"{item.dest} on the board does not match what was "
                                     "written (bad flash or cable): erase the flash and "
                                     "provision again; nothing was registered")
        return "sha256 on the board"
    for item in files:
        if board.read_file(item.dest) != item.data:
            raise KnuteError(f"{item.dest} on the board does not match what was written "
                             "(bad flash or cable): erase the flash and provision again; "
                             "nothing was registered")
    return "read back"


def firmware_version_on(board: Board) -> str | None:
    """firmware.VERSION as the board's /lib holds it, or None."""
    try:
        return str(board.eval(
            "(lambda sys: (sys.path.append('/lib') if '/lib' not in sys.path else None, "
            "__import__('firmware').VERSION)[1])(__import__('sys'))"))
    except BoardError:
        return None


_FORGET_BOOTS = """
import os
try:
    os.remove('state/boots.json')
except OSError:
    pass
"""


_SET_CLOCK = """
import os, time
now_ms = {now_ms}
epoch = 946684800 if time.gmtime(0)[0] == 2000 else 0
try:
    import machine
    t = time.gmtime(now_ms // 1000 - epoch)
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))
    offset = 0
except (ImportError, AttributeError):
    offset = now_ms - (time.time_ns() // 1000000 + epoch * 1000)
try:
    os.mkdir('state')
except OSError:
    pass
with open('state/clock.tmp', 'w') as f:
    f.write('{{"offset_ms": %d}}' % offset)
os.rename('state/clock.tmp', 'state/clock.json')
print(offset)
"""


def set_clock(board: Board, now_s: float | None = None) -> int:
    """Set the node's clock to the host's UTC time (docs/protocol.md 12.6); the offset kept.

    A board's RTC is set (mpremote's ``rtc --set`` does the same) and the
    firmware's clock offset (state/clock.json, read at every boot) cleared; a
    port without machine.RTC (the unix port of a virtual board) keeps its
    clock and gets the offset instead. Returns that offset in ms.
    """
    import time

    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    return int(board.exec(_SET_CLOCK.format(now_ms=now_ms)).decode().strip() or 0)


def forget_boots(board: Board) -> None:
    """Drop the node's boot count: a trial boot on the bench is not a field boot, and
    the boot-loop guard starts afresh."""
    board.exec(_FORGET_BOOTS)
