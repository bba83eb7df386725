"""The ``knute`` command: one table of subcommands, each in its own module.

Every module named in ``COMMANDS`` provides ``add_arguments(parser)`` and
``run(args) -> int``. Modules keep heavy imports (paho-mqtt, pymodbus, rich)
inside ``run`` so that building the parser stays cheap. A ``KnuteError`` (or a
``FrameError`` from the protocol) becomes one line on stderr and exit status 2
(78 for a ``ConfigError`` of ``knute gateway run``, so systemd stops restarting it).
A reader that closes the pipe early (``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from gateway.errors import KnuteError
from protocol.errors import FrameError

EXIT_BROKEN_PIPE = 141         # 128 + SIGPIPE, as the shell reports a command cut off by `head`

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("tools.cli.codec", "encode readings into an encrypted frame (hex)"),
    "decode": ("tools.cli.codec", "decode and verify a frame (hex) and print it as JSON"),
    "protocol": ("tools.cli.protocol", "protocol facts: frame sizes against SenML-CBOR and JSON"),
    "bench": ("tools.cli.bench",
              "benchmarks that print figures (protocol, gateway, firmware, ...)"),
    "gateway": ("tools.cli.gateway", "run the gateway daemon or query a running one"),
    "devices": ("tools.cli.devices", "manage the gateway's device registry"),
    "vdevice": ("tools.cli.vdevice", "start a virtual MicroPython board behind a pty"),
    "provision": ("tools.cli.provision", "provision a node over mpremote and register it"),
    "simulate": ("tools.cli.simulate", "simulate a fleet of nodes sending real frames"),
    "airtime": ("tools.cli.airtime", "LoRa time on air, duty-cycle budget and battery life"),
    "plan": ("tools.cli.plan", "plan a city's concentrators: a seeded radio simulation"),
    "modbus-sim": ("tools.cli.modbus_sim", "simulate Modbus water meters and air stations"),
    "demo": ("tools.cli.demo", "broker, gateway, fleet and a live view in one command"),
    "backend": ("tools.cli.backend", "store readings from MQTT, rebuild hourly use, find leaks"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Subcommands whose module exists in this installation."""
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-parser per available subcommand."""
    parser = argparse.ArgumentParser(prog="knute", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd, name)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``knute`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args._run(args) or 0)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (`knute devices list | head -1`): nothing more to say.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet, and
        # exit as a process killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except KnuteError as exc:
        print(f"knute {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except FrameError as exc:
        from gateway.reasons import describe

        detail = f" ({exc.detail})" if exc.detail else ""
        print(f"knute {args.command}: {describe(exc.reason)}{detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
