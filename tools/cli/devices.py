"""``knute devices``: manage the gateway's device registry.

    knute devices add DEVICE --kind water_meter (--key HEX | --generate-key) [--name N]
                             [--site S] [--address A] [--lat X --lon Y]
    knute devices list [--json] [--show-key]
    knute devices show DEVICE [--json] [--show-key]
    knute devices remove DEVICE
    knute devices import FILE.csv           (all or nothing)
    knute devices reset-counter DEVICE      (accept a node's restarted frame counter)

The registry is found through ``--registry PATH`` or the gateway configuration
(``--config``, default $KNUTE_CONFIG or /etc/knute/gateway.toml). DEVICE is
decimal, 0x-hex or 8 hex digits. Keys are printed only with ``--show-key``.
After a change, a running gateway is told to re-read the registry over its
status socket (when it can be reached).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from knute.gateway.errors import KnuteError


def add_arguments(parser: argparse.ArgumentParser, name: str = "devices") -> None:
    """The device sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="gateway TOML file (default: $KNUTE_CONFIG or "
                             "/etc/knute/gateway.toml)")
    common.add_argument("--registry", default=argparse.SUPPRESS,
                        help="registry database path (instead of the configuration's)")
    for action in common._actions:
        if action.dest != "help":
            parser._add_action(action)
    sub = parser.add_subparsers(dest="devices_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", parents=[common], help="register one device")
    add.add_argument("device", help="device id: decimal, 0x-hex or 8 hex digits")
    add.add_argument("--kind", required=True, help="sensor kind, e.g. water_meter")
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="AES-128 key, 32 hex digits")
    keys.add_argument("--generate-key", action="store_true", help="make a random key")
    add.add_argument("--name", default="", help="a human name, e.g. the meter's address")
    add.add_argument("--site", default="", help="site or district")
    add.add_argument("--address", help="street address (location metadata)")
    add.add_argument("--lat", type=float, help="latitude (location metadata)")
    add.add_argument("--lon", type=float, help="longitude (location metadata)")
    add.add_argument("--show-key", action="store_true", help="print the key")
    add.add_argument("--json", action="store_true", help="print the device as JSON")

    lst = sub.add_parser("list", parents=[common], help="list registered devices")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.add_argument("--show-key", action="store_true", help="include keys")

    show = sub.add_parser("show", parents=[common], help="show one device")
    show.add_argument("device")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--show-key", action="store_true", help="include the key")

    rm = sub.add_parser("remove", parents=[common], help="remove one device")
    rm.add_argument("device")

    imp = sub.add_parser("import", parents=[common],
                         help="register every device of a CSV file (all or nothing)")
    imp.add_argument("file", help="CSV with header device_id,kind,key[,name,site,location,...]")
    imp.add_argument("--json", action="store_true", help="print the count as JSON")

    rc = sub.add_parser("reset-counter", parents=[common],
                        help="accept a node's restarted frame counter (after checking it)")
    rc.add_argument("device")
    rc.add_argument("--spool", help="spool database path (instead of the configuration's)")
    rc.add_argument("--json", action="store_true", help="print the result as JSON")


def _config(args: argparse.Namespace) -> Any:
    from knute.gateway import config
    from knute.tools.cli.gateway import default_config

    return config.load(getattr(args, "config", None) or default_config())


def _registry(args: argparse.Namespace) -> Any:
    from knute.gateway.registry import Registry

    path = getattr(args, "registry", None) or _config(args).registry
    _check_owner(path, "registry")
    return Registry(path)


def _check_owner(path: str, what: str) -> None:
    """Refuse root on a database another user owns.

    SQLite run as root would leave root-owned ``-wal``/``-shm`` files next to it
    that the gateway's own user can no longer open.
    """
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(path).st_uid
    except OSError:
        return
    if owner == 0:
        return
    import pwd

    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    raise KnuteError(f"{what} {path} belongs to user {name}: run as that user "
                     f"(sudo -u {name} knute devices ...), not as root")


def _notify(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any] | None:
    """Send a request to a running gateway, if one can be found; None otherwise."""
    from knute.gateway.status import request

    try:
        path = _config(args).status_socket
    except KnuteError:
        return None
    if not os.path.exists(path):
        return None
    try:
        return request(path, message, timeout=15.0)
    except (OSError, ValueError):
        return None


def run(args: argparse.Namespace) -> int:
    """Dispatch one device sub-command."""
    from knute.gateway.registry import format_device_id, parse_device_id

    action = args.devices_command
    if action == "reset-counter":
        return _reset_counter(args)
    reg = _registry(args)
    try:
        if action == "add":
            location: dict[str, Any] = {}
            if args.address:
                location["address"] = args.address
            if args.lat is not None:
                location["lat"] = args.lat
            if args.lon is not None:
                location["lon"] = args.lon
            key = os.urandom(16) if args.generate_key else args.key
            dev = reg.add(args.device, args.kind, key, name=args.name, site=args.site,
                          location=location)
            _notify(args, {"cmd": "reload"})
            if args.json:
                print(json.dumps(dev.as_dict(show_key=args.show_key), indent=2))
            else:
                print(f"added {dev.hex_id} ({dev.kind}) {dev.name}".rstrip())
                if args.show_key:
                    print(f"key {dev.key.hex()}")
                elif args.generate_key:
                    print(f"key generated; print it with 'knute devices show {dev.hex_id} "
                          "--show-key'")
            return 0
        if action == "list":
            devices = reg.all()
            if args.json:
                print(json.dumps([d.as_dict(show_key=args.show_key) for d in devices],
                                 indent=2))
            else:
                _print_table(devices, args.show_key)
            return 0
        if action == "show":
            device_id = parse_device_id(args.device)
            dev = reg.get(device_id)
            if dev is None:
                raise KnuteError(f"device {format_device_id(device_id)} is not registered")
            data = dev.as_dict(show_key=args.show_key)
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                for key, value in data.items():
                    print(f"{key:<10} {_show_value(key, value)}")
            return 0
        if action == "remove":
            device_id = parse_device_id(args.device)
            reg.remove(device_id)
            _notify(args, {"cmd": "reload"})
            print(f"removed {format_device_id(device_id)}")
            return 0
        if action == "import":
            from knute.gateway.registry import decode_csv

            try:
                with open(args.file, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise KnuteError(f"{args.file}: {exc.strerror}") from None
            count = reg.import_csv(decode_csv(data, args.file), source=args.file)
            _notify(args, {"cmd": "reload"})
            if args.json:
                print(json.dumps({"imported": count}))
            else:
                print(f"imported {count} devices from {args.file}")
            return 0
    finally:
        reg.close()
    raise KnuteError(f"unknown action {action}")


def _show_value(key: str, value: Any) -> str:
    from knute.tools.cli.gateway import iso

    if key == "last_seen":
        return iso(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "-" if value is None else str(value)


def _print_table(devices: list[Any], show_key: bool) -> None:
    from knute.tools.cli.gateway import iso

    header = ["device", "kind", "name", "site", "last_fcnt", "last_seen", "battery", "alarms"]
    if show_key:
        header.append("key")
    rows = [header]
    for d in devices:
        row = [d.hex_id, d.kind, d.name, d.site,
               "-" if d.last_fcnt is None else str(d.last_fcnt), iso(d.last_seen),
               "-" if d.battery is None else f"{d.battery}%", ",".join(d.alarms) or "-"]
        if show_key:
            row.append(d.key.hex())
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(devices)} devices", file=sys.stderr)


def _reset_counter(args: argparse.Namespace) -> int:
    from knute.gateway.registry import format_device_id, parse_device_id

    device_id = parse_device_id(args.device)
    name = format_device_id(device_id)
    reg = _registry(args)
    try:
        if reg.get(device_id) is None:
            raise KnuteError(f"device {name} is not registered")
    finally:
        reg.close()
    reply = None if args.spool else _notify(args, {"cmd": "reset-counter", "device": device_id})
    if reply is not None:
        if not reply.get("ok"):
            raise KnuteError(f"the gateway refused: {reply.get('error')}")
        how = "by the running gateway"
        last = None
    else:
        from knute.gateway.dbfile import DataLock
        from knute.gateway.registry import Registry
        from knute.gateway.spool import Spool

        spool_path = args.spool or _config(args).spool
        _check_owner(spool_path, "spool")
        holder = DataLock(spool_path).held_elsewhere()
        if holder is not None:
            raise KnuteError(f"a gateway (pid {holder or '?'}) is running on {spool_path} but "
                             "did not answer on its status socket; reset the counter "
                             "through it (--config) or stop it first")
        spool = Spool(spool_path, max_bytes=1 << 40, max_age_s=1e12)
        try:
            last = spool.last_fcnt(device_id)
            spool.reset_counter(device_id)
        finally:
            spool.close()
        reg2 = Registry(getattr(args, "registry", None) or _config(args).registry)
        try:
            reg2.clear_counter(device_id)
        finally:
            reg2.close()
        how = f"in {spool_path}"
    if args.json:
        print(json.dumps({"device": name, "reset": True, "previous_fcnt": last}))
    else:
        print(f"replay counter of {name} reset {how}; its next frame is accepted whatever "
              "its counter")
    return 0
