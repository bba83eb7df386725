"""``knute devices``: manage the gateway's device registry.

    knute devices add DEVICE --kind water_meter (--key HEX | --generate-key) [--name N]
                             [--site S] [--address A] [--lat X --lon Y]
    knute devices list [--json] [--show-key]
    knute devices show DEVICE [--json] [--show-key]
    knute devices remove DEVICE
    knute devices import FILE.csv [--update] (all or nothing; idempotent)
    knute devices export --seal-for PUBLIC  (keys sealed; tools/cli/devices_share.py)
    knute devices share --gateway ID=PUBLIC (one registry for many gateways)
    knute devices share-key                 (this gateway's public share key)
    knute devices reset-counter DEVICE      (accept a node's restarted frame counter)
    knute devices send DEVICE COMMAND [ARGS...] [--id REF] [--json]
                                            (queue a downlink command; see --help)
    knute devices cancel DEVICE CMD_ID      (stop sending a queued command)

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
    add.add_argument("--interval-s", type=float,
                     help="its send interval in seconds, for the silent-node alarm (default: "
                          "its kind's, [silence.interval_s])")
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
    imp.add_argument("file", help="CSV with header "
                     "device_id,kind,key[,name,site,interval_s,location,...]")
    imp.add_argument("--json", action="store_true", help="print the count as JSON")
    imp.add_argument("--update", action="store_true",
                     help="update devices whose row differs (else the file is refused)")

    send = sub.add_parser(
        "send", parents=[common], help="queue a command for the node's next receive window",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Queue a downlink command; the gateway sends it after the node's next "
                    "uplink\nand follows it to applied, rejected or expired "
                    "('knute devices show DEVICE').",
        epilog=SEND_COMMANDS)
    send.add_argument("device", help="device id: decimal, 0x-hex or 8 hex digits")
    send.add_argument("dl_command", choices=SEND_CHOICES, metavar="COMMAND",
                      help="one of: " + ", ".join(SEND_CHOICES))
    send.add_argument("args", nargs="*", metavar="ARG",
                      help="KEY=VALUE for config, alarm bits for ack, FILES for update")
    send.add_argument("--id", dest="ref", help="your reference for the command (unique per "
                      "device; a repeat is not queued twice)")
    send.add_argument("--expires-hours", type=float, help="expiry (default: the "
                      "configuration's downlinks.expiry_hours)")
    send.add_argument("--chunk", type=int, default=85,
                      help="update: bundle bytes per downlink (85 fits SF9; 192 for SF7-8 "
                           "and serial nodes, 22 for SF10-12)")
    send.add_argument("--dry-run", action="store_true",
                      help="update: queue nothing; say how long the bundle takes to reach "
                           "--fleet nodes over the air at --sf")
    send.add_argument("--fleet", type=int, default=1, help="update --dry-run: nodes")
    send.add_argument("--sf", type=int, default=9, choices=range(7, 13), metavar="SF",
                      help="update --dry-run: the nodes' spreading factor (default 9)")
    send.add_argument("--interval-s", type=float, default=900.0,
                      help="update --dry-run: seconds between a node's uplinks while it "
                           "stages an update (default 900)")
    send.add_argument("--json", action="store_true", help="print the queued command(s)")

    cancel = sub.add_parser("cancel", parents=[common], help="stop sending a queued command")
    cancel.add_argument("device")
    cancel.add_argument("cmd_id", type=int)
    cancel.add_argument("--json", action="store_true", help="print the command as JSON")

    rc = sub.add_parser("reset-counter", parents=[common],
                        help="accept a node's restarted frame counter (after checking it)")
    rc.add_argument("device")
    rc.add_argument("--spool", help="spool database path (instead of the configuration's)")
    rc.add_argument("--json", action="store_true", help="print the result as JSON")

    from knute.tools.cli import devices_share

    devices_share.add_arguments(sub, common)


SEND_CHOICES = ("time", "config", "ack", "rekey", "reboot", "update")
SEND_COMMANDS = """commands:
  time                      set the node's clock (answered with the end of its next uplink)
  config KEY=VALUE ...      set 1-4 whitelisted values, e.g. water.sends_per_day=4
                            (docs/protocol.md 12.8; a value out of range is refused here)
  ack [BITS]                acknowledge alarms (default: the bits of the next uplink)
  rekey                     rotate the device key in two phases (a new random key)
  reboot                    reset the node once its report is stored
  update FILES ...          send changed firmware modules (paths firmware/... or
                            protocol/..., relative to the current directory);
                            --dry-run says how long it takes for --fleet nodes
"""


def _downlinks(args: argparse.Namespace) -> Any:
    """The downlink store of the registry (created with the registry when missing)."""
    from knute.gateway.downlinks import DownlinkLimits, DownlinkStore

    path = getattr(args, "registry", None)
    limits = DownlinkLimits()
    stride = (0, 1)
    gateway_id = ""
    peers: tuple[str, ...] = ()
    if path is None:
        from knute.gateway.downlink_service import rekey_peers

        cfg = _config(args)
        path = cfg.registry
        limits = DownlinkLimits(cfg.downlinks.max_queued, cfg.downlinks.expiry_s,
                                cfg.downlinks.max_sends)
        stride = (cfg.downlinks.gateway_index, cfg.downlinks.gateways)
        gateway_id, peers = cfg.gateway_id, rekey_peers(cfg)
    _check_owner(path, "registry")
    return DownlinkStore(path, limits, stride, gateway_id=gateway_id, peers=peers)


def _send(args: argparse.Namespace, reg: Any) -> int:
    from knute.gateway.device_fields import format_device_id, parse_device_id
    from knute.gateway.downlink_plan import config_values

    device_id = parse_device_id(args.device)
    command, extra = args.dl_command, list(args.args)
    if args.dry_run:
        return _update_dry_run(args, extra) if command == "update" else _no_dry_run(command)
    if reg.get(device_id) is None:
        raise KnuteError(f"device {format_device_id(device_id)} is not registered")
    if command in ("time", "rekey", "reboot") and extra:
        raise KnuteError(f"{command} takes no arguments")
    expiry = args.expires_hours * 3600.0 if args.expires_hours is not None else None
    store = _downlinks(args)
    try:
        if command == "config":
            cmds = [store.queue(device_id, "config", {"values": config_values(extra)},
                                ref=args.ref, expiry_s=expiry)[0]]
        elif command == "ack":
            if len(extra) > 1:
                raise KnuteError("ack takes at most one argument: the alarm bits")
            bits: dict[str, Any] = {}
            if extra:
                try:
                    bits["bits"] = int(extra[0], 0)
                except ValueError:
                    raise KnuteError(f"ack: {extra[0]!r} is not an integer") from None
                if not 0 <= bits["bits"] <= 0xFFFFFF:
                    raise KnuteError("ack: alarm bits are 0..16777215")
            cmds = [store.queue(device_id, "ack", bits, ref=args.ref, expiry_s=expiry)[0]]
        elif command == "rekey":
            cmds = [store.begin_rekey(device_id, os.urandom(16), ref=args.ref, expiry_s=expiry)]
        elif command == "update":
            cmds = store.queue_update(device_id, _bundle(extra), args.chunk, ref=args.ref)
        else:
            cmds = [store.queue(device_id, command, {}, ref=args.ref, expiry_s=expiry)[0]]
    finally:
        store.close()
    _notify(args, {"cmd": "reload"})
    if args.json:
        print(json.dumps([c.as_dict() for c in cmds], indent=2))
    else:
        first = cmds[0]
        more = f" (+{len(cmds) - 1} more)" if len(cmds) > 1 else ""
        print(f"queued {command} for {format_device_id(device_id)}: command {first.cmd_id}"
              f"{more}, {first.state}")
        if command == "rekey" and store.peers:
            print(f"it goes out once every peer gateway ({', '.join(store.peers)}) holds "
                  "the new key (knute devices show: rekey_peers)")
    return 0


def _no_dry_run(command: str) -> int:
    raise KnuteError(f"--dry-run is for update, not {command}")


def _update_dry_run(args: argparse.Namespace, files: list[str]) -> int:
    from knute.gateway.downlink_plan import update_plan

    if args.fleet < 1 or args.interval_s <= 0:
        raise KnuteError("--fleet must be at least 1 and --interval-s positive")
    plan = update_plan(len(_bundle(files)), args.sf, args.fleet, args.interval_s)
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    print(f"bundle {plan['bundle_bytes']} bytes: {plan['chunks']} chunks of "
          f"{plan['chunk_bytes']} bytes at SF{plan['sf']}, {plan['downlinks_per_node']} "
          f"downlinks per node of {plan['downlink_airtime_ms']} ms on air")
    print(f"one node: {plan['hours_per_node']} h at one uplink every "
          f"{plan['uplink_interval_s']:g} s")
    print(f"{plan['nodes']} nodes: {plan['fleet_airtime_s']} s on air, "
          f"{plan['hours_for_duty_cycle']} h within the {plan['sub_band']} sub-band's "
          f"{plan['duty_cycle_budget_s_per_h']:g} s an hour; the fleet takes "
          f"{plan['hours_for_fleet']} h")
    return 0


def _bundle(files: list[str]) -> bytes:
    from knute.protocol import downlink
    from knute.protocol.downlink_path import path_ok

    if not files:
        raise KnuteError("update needs at least one module file")
    entries = []
    for name in files:
        path = os.path.normpath(name).replace(os.sep, "/")
        if not path_ok(path):
            raise KnuteError(f"{name}: a module path is firmware/... or protocol/..., "
                             "ends with .py or .mpy, 1-64 characters of a-z 0-9 _ . /")
        try:
            with open(name, "rb") as fh:
                entries.append((path, fh.read()))
        except OSError as exc:
            raise KnuteError(f"{name}: {exc.strerror}") from None
    try:
        return bytes(downlink.bundle(entries))
    except ValueError as exc:
        raise KnuteError(str(exc)) from None


def _print_commands(cmds: list[Any]) -> None:
    from knute.tools.cli.gateway import iso

    if not cmds:
        print("downlinks  none")
        return
    print("downlinks")
    for c in cmds:
        outcome = ""
        if c.result is not None:
            outcome = f" {c.result}" + (f" (detail {c.detail})" if c.detail else "")
        ref = f" id={c.ref}" if c.ref else ""
        print(f"  {c.cmd_id:>5} {c.op:<10} {c.state:<9}{outcome} sends={c.sends} "
              f"updated {iso(c.updated_at)}{ref}")


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
    from knute.gateway.device_fields import format_device_id, parse_device_id

    action = args.devices_command
    if action == "reset-counter":
        return _reset_counter(args)
    if action == "share-key":
        from knute.tools.cli import devices_share

        return devices_share.share_key(_config(args), args.json)
    reg = _registry(args)
    try:
        if action == "send":
            return _send(args, reg)
        if action == "cancel":
            store = _downlinks(args)
            try:
                cmd = store.cancel(parse_device_id(args.device), args.cmd_id)
            finally:
                store.close()
            if args.json:
                print(json.dumps(cmd.as_dict(), indent=2))
            else:
                print(f"command {cmd.cmd_id} cancelled")
            return 0
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
                          location=location, interval_s=args.interval_s)
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
            store = _downlinks(args)
            try:
                cmds = store.commands(device_id, limit=20)
                dcnt = store.counter(device_id)
                rot = store.rekey_state(device_id)
                peers = store.rekey_peers(device_id)
            finally:
                store.close()
            data["downlink_counter"] = dcnt
            data["key_no"] = rot.key_no
            data["rekey_pending"] = rot.next_key_no
            if peers:
                data["rekey_peers"] = peers
            if args.json:
                data["downlinks"] = [c.as_dict() for c in cmds]
                print(json.dumps(data, indent=2))
            else:
                for key, value in data.items():
                    print(f"{key:<16} {_show_value(key, value)}")
                _print_commands(cmds)
            return 0
        if action == "remove":
            device_id = parse_device_id(args.device)
            reg.remove(device_id)
            _notify(args, {"cmd": "reload"})
            print(f"removed {format_device_id(device_id)}")
            return 0
        if action == "import":
            from knute.gateway.device_csv import decode_csv

            try:
                with open(args.file, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise KnuteError(f"{args.file}: {exc.strerror}") from None
            from knute.tools.cli.devices_share import open_sealed_csv

            text = decode_csv(data, args.file)
            cfg = None
            if "x25519:" in text:
                cfg = _config(args)
            text = open_sealed_csv(text, cfg, args.file)
            report = reg.import_report(text, source=args.file, update=args.update)
            _notify(args, {"cmd": "reload"})
            count = report["added"] + report["updated"]
            if args.json:
                print(json.dumps({"imported": count, **{k: v for k, v in report.items()
                                                        if v and k != "added"}}))
            else:
                print(f"imported {count} devices from {args.file}" + (
                    f" ({report['updated']} updated, {report['unchanged']} unchanged)"
                    if report["updated"] or report["unchanged"] else ""))
            return 0
        if action == "export":
            from knute.tools.cli import devices_share

            return devices_share.export(reg, args.seal_for, args.out)
        if action == "share":
            from knute.tools.cli import devices_share

            return devices_share.share(_config(args), reg, args.gateway, args.json)
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

    header = ["device", "kind", "name", "site", "interval_s", "last_fcnt", "last_seen",
              "battery", "alarms"]
    if show_key:
        header.append("key")
    rows = [header]
    for d in devices:
        row = [d.hex_id, d.kind, d.name, d.site,
               "-" if d.interval_s is None else f"{d.interval_s:g}",
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
    from knute.gateway.device_fields import format_device_id, parse_device_id

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
