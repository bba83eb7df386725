"""The ``knute`` command: one table of subcommands, each in its own module.

Every module named in ``COMMANDS`` (relative to this package) provides
``add_arguments(parser)`` and ``run(args) -> int``. A command's module is
imported only when that command runs (or shows its own help): ``knute --help``
lists every command from the table alone, and ``knute devices ...`` never
loads the benchmarks, the simulators or the rig. Gateways, simulators and
tests start ``knute`` thousands of times, so what a start imports is CPU spent
each time; tests/tools/test_cli_light.py names what must stay out. Modules
keep heavy imports (paho-mqtt, pymodbus, rich) inside ``run`` for the same
reason. A ``KnuteError`` (or a ``FrameError`` from the protocol) becomes one line
on stderr and exit status 2
(78 for a ``ConfigError`` of ``knute gateway run``, so systemd stops restarting it).
A reader that closes the pipe early (``| head``) ends the command quietly.

Each subcommand names the package extra it needs (``EXTRAS``): on a field
gateway installed with ``pip install 'knute[gateway]'`` the technician's
commands say in one line which extra to install, never with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence

from knute.gateway.errors import KnuteError
from knute.protocol.errors import FrameError

EXIT_BROKEN_PIPE = 141         # 128 + SIGPIPE, as the shell reports a command cut off by `head`

# extra -> the modules it installs that a subcommand imports (pyproject.toml's extras)
EXTRAS: dict[str, tuple[str, ...]] = {
    "gateway": ("paho.mqtt", "pymodbus", "serial", "prometheus_client"),
    "tools": ("mpremote", "rich", "cbor2"),
    "demo": ("amqtt",),
    "backend": ("paho.mqtt", "jsonschema"),
}
# extras that include another one (pyproject.toml: tools = ["knute[gateway]", ...])
EXTRA_INCLUDES: dict[str, tuple[str, ...]] = {"tools": ("gateway",), "demo": ("tools",)}

# subcommand -> the extra it needs; those not listed need only the bare package
COMMAND_EXTRA: dict[str, str] = {
    "gateway": "gateway", "devices": "gateway",
    "protocol": "tools", "bench": "tools", "vdevice": "tools", "provision": "tools",
    "simulate": "tools", "airtime": "tools", "modbus-sim": "tools", "demo": "tools",
    "plan": "tools", "backend": "backend",
}

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": (".codec", "encode readings into an encrypted frame (hex)"),
    "decode": (".codec", "decode and verify a frame (hex) and print it as JSON"),
    "protocol": (".protocol", "protocol facts: frame sizes against SenML-CBOR and JSON"),
    "bench": (".bench",
              "benchmarks that print figures (protocol, gateway, firmware, ...)"),
    "gateway": (".gateway", "run the gateway daemon or query a running one"),
    "devices": (".devices", "manage the gateway's device registry"),
    "vdevice": (".vdevice", "start a virtual MicroPython board behind a pty"),
    "provision": (".provision", "provision a node over mpremote and register it"),
    "simulate": (".simulate", "simulate a fleet of nodes sending real frames"),
    "airtime": (".airtime", "LoRa time on air, duty-cycle budget and battery life"),
    "plan": (".plan", "plan a city's concentrators: a seeded radio simulation"),
    "modbus-sim": (".modbus_sim", "simulate Modbus water meters and air stations"),
    "demo": (".demo", "broker, gateway, fleet and a live view in one command"),
    "backend": (".backend", "store readings from MQTT, rebuild hourly use, find leaks"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Subcommands whose module exists in this installation."""
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module, __name__) is not None:
            found[name] = (module, help_text)
    return found


def _installed(module: str) -> bool:
    """True if ``module`` (dotted) can be imported here, found without importing it.

    ``importlib.util.find_spec("paho.mqtt")`` would import the package ``paho``
    to look inside it; the path finder is asked about each part instead.
    """
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    for part in rest.split(".") if rest else ():
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(
            f"{spec.name}.{part}", spec.submodule_search_locations)
    return spec is not None


def missing_extra(extra: str) -> str | None:
    """``extra`` or an extra it includes whose modules are not all installed, else None."""
    for included in EXTRA_INCLUDES.get(extra, ()):
        if missing_extra(included) is not None:
            return extra
    if all(_installed(module) for module in EXTRAS[extra]):
        return None
    return extra


def needs_extra(command: str, extra: str) -> str:
    """The one-line message of a subcommand whose extra is not installed."""
    return f"knute {command}: needs the {extra!r} extra: pip install 'knute[{extra}]'"


def _extra_of_missing_module(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module an import did not find, if knute names one."""
    name = exc.name or ""
    for extra in ("gateway", "tools", "demo"):
        for module in EXTRAS[extra]:
            top = module.split(".")[0]
            if name == module or name.split(".")[0] == top:
                return extra
    return None


def _unavailable(extra: str) -> argparse.ArgumentParser:
    """A stand-in sub-parser's defaults for a subcommand that cannot run here."""
    def run(args: argparse.Namespace) -> int:
        print(needs_extra(args.command, extra), file=sys.stderr)
        return 2
    placeholder = argparse.ArgumentParser(add_help=False)
    placeholder.set_defaults(_run=run, _stand_in=True)
    return placeholder


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``knute`` (``only``: of the one subcommand named first).

    Without ``only`` every available subcommand gets a sub-parser that holds
    its one-line help from ``COMMANDS`` and nothing else: enough for
    ``knute --help`` and for the errors that list the commands, and no
    command's module is imported. With ``only`` (a subcommand's name) the
    parser has that one sub-parser, complete: its module is imported and adds
    its arguments. A subcommand whose extra is not installed gets a stand-in
    that accepts any arguments and says which extra to install.
    """
    parser = argparse.ArgumentParser(prog="knute", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = _available()
    if only is not None:
        commands = {only: commands[only]}
    for name, (module_name, help_text) in commands.items():
        extra = COMMAND_EXTRA.get(name)
        missing = missing_extra(extra) if extra else None
        if only is None:
            # The listing: help text only. main() builds the named command's parser
            # before anything runs.
            if missing is not None:
                help_text = f"{help_text} (needs knute[{missing}])"
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = None
        if missing is None:
            try:
                module = importlib.import_module(module_name, __name__)
            except ModuleNotFoundError as exc:
                missing = _extra_of_missing_module(exc)
                if missing is None:
                    raise
        if module is None:
            assert missing is not None
            sub.add_parser(name, help=f"{help_text} (needs knute[{missing}])",
                           parents=[_unavailable(missing)], add_help=False)
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd, name)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``knute`` console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    # A command named first needs only its own sub-parser; anything else (no
    # command, an option first, a name that is no command) gets the listing,
    # whose help and errors name every command without importing one. An option
    # before a command's name (`knute -x devices list`) leaves the listing with
    # that command chosen: its own parser then judges the whole line.
    named = words[0] if words and words[0] in _available() else None
    parser = build_parser(named)
    args, unknown = parser.parse_known_args(argv)
    if named is None:
        parser = build_parser(args.command)
        args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_stand_in", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
    except ModuleNotFoundError as exc:
        extra = _extra_of_missing_module(exc)
        if extra is None:
            raise
        print(needs_extra(args.command, extra), file=sys.stderr)
        return 2
    except KnuteError as exc:
        print(f"knute {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except FrameError as exc:
        from knute.gateway.reasons import describe

        detail = f" ({exc.detail})" if exc.detail else ""
        print(f"knute {args.command}: {describe(exc.reason)}{detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
