"""The LoRa drivers a node's config needs on its board: which chip, present or not, install.

micropython-lib's drivers are installed with ``mpremote mip``; a board that
lacks the one its config needs is either given it (``--install-drivers``)
or refused with the exact command, before anything is written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.board import Board

# micropython-lib LoRa drivers by radio chip: the class the firmware's board HAL
# builds, and the mip packages that define it (lora.SX1262 exists only with the
# lora-sync layer installed beside the chip package).
LORA_DRIVERS = {
    "sx1262": ("SX1262", ("lora-sync", "lora-sx126x")),
    "sx1261": ("SX1261", ("lora-sync", "lora-sx126x")),
    "sx1276": ("SX1276", ("lora-sync", "lora-sx127x")),
    "sx1278": ("SX1278", ("lora-sync", "lora-sx127x")),
}



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
