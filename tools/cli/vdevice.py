"""``knute vdevice``: start a virtual MicroPython board and print its port.

The board itself is ``tools.sim.vdevice.VirtualBoard``; this is the command
around it: options, signals, the one line a script or mpremote needs.

Wiring it to a gateway: ``--null-modem`` joins two more ptys back to back
(``tools.rig.nullmodem``) and makes /dev/pts visible on the board (``--bind``):
the board's end goes in config.json as ``bench.uart.link``, the other end is
the gateway's ``[[serial]] url``. Both are printed at start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from knute.gateway.errors import KnuteError
from knute.tools.sim.vdevice import DEFAULT_HEAPSIZE, VirtualBoard, parse_size


def add_arguments(parser: argparse.ArgumentParser, name: str = "vdevice") -> None:
    """Options of ``knute vdevice``."""
    parser.add_argument("--flash", metavar="DIR",
                        help="the board's flash directory (default: a new temporary one, "
                             "removed when the board stops)")
    parser.add_argument("--flash-size", type=parse_size, metavar="BYTES",
                        help="fault: a flash this small (e.g. 64k); writes past it fail "
                             "with ENOSPC")
    parser.add_argument("--corrupt-writes", action="store_true",
                        help="fault: flip one bit in every write to the flash")
    parser.add_argument("--heapsize", default=DEFAULT_HEAPSIZE,
                        help=f"MicroPython heap (default {DEFAULT_HEAPSIZE})")
    parser.add_argument("--bits", type=int, choices=(64, 32), default=64,
                        help="word size of the unix port the board runs on: 64 (the port "
                             "from PyPI, default) or 32 (../shared/upy32/micropython, a "
                             "board's small ints and object sizes)")
    parser.add_argument("--bind", action="append", default=[], metavar="HOSTDIR",
                        help="make a host directory visible at the same path on the board "
                             "(e.g. /dev/pts for bench wiring); repeatable")
    parser.add_argument("--null-modem", action="store_true",
                        help="also start a null modem for the node's UART link: prints the "
                             "board's end (config.json bench.uart.link) and the gateway's end "
                             "([[serial]] url); implies --bind /dev/pts")
    parser.add_argument("--for", dest="for_s", type=float, metavar="SECONDS",
                        help="stop after this many seconds (default: until Ctrl-C/SIGTERM)")
    parser.add_argument("--json", action="store_true",
                        help="print port, flash dir and pids as one JSON line")


def run(args: argparse.Namespace) -> int:
    """Start a virtual board, print its port and keep it running until told to stop."""
    if args.flash is not None and Path(args.flash).exists() and not Path(args.flash).is_dir():
        raise KnuteError(f"--flash {args.flash} is not a directory")
    for bind in args.bind:
        if not Path(bind).is_dir():
            raise KnuteError(f"--bind {bind}: no such host directory")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    binds = list(args.bind)
    if args.null_modem and "/dev/pts" not in binds:
        binds.append("/dev/pts")        # the board opens its end of the null modem there
    old_term = signal.signal(signal.SIGTERM, on_signal)
    old_int = signal.signal(signal.SIGINT, on_signal)
    line = None
    try:
        if args.null_modem:
            from knute.tools.rig.nullmodem import NullModem

            line = NullModem()
        with VirtualBoard(args.flash, flash_size=args.flash_size,
                          corrupt_writes=args.corrupt_writes, heapsize=args.heapsize,
                          binds=tuple(binds), bits=args.bits) as board:
            info = board.info()
            if line is not None:
                info["null_modem"] = {"board": line.a_path, "gateway": line.b_path}
            if args.json:
                print(json.dumps(info), flush=True)
            else:
                print(board.port, flush=True)
                if line is not None:
                    print(f"null modem: the board's end {line.a_path} (config.json "
                          f"bench.uart.link), the gateway's end {line.b_path} "
                          "([[serial]] url)", file=sys.stderr, flush=True)
                print(f"virtual board: flash {board.flash_dir}, pid {os.getpid()}; "
                      "Ctrl-C to stop", file=sys.stderr, flush=True)
            stop.wait(args.for_s)
            if board.error is not None:
                raise KnuteError(f"virtual board stopped: {board.error}")
    finally:
        if line is not None:
            line.close()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    return 0
