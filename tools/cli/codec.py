"""``knute encode`` and ``knute decode``: one frame to hex and back, for the bench.

Readings on the command line are given in their units (``temperature=-3.5``,
``battery=85``, ``profile=0,2,31``, ``alarms=leak,tamper``, ``pm1=null``); they
are scaled to the wire's integers with the kinds table and must land exactly on
a wire step (battery travels in 5 % steps, temperature in 0.1 °C).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from knute.gateway.errors import KnuteError
from knute.gateway.registry import parse_device_id, parse_key


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Arguments of ``knute encode`` or ``knute decode`` (chosen by `name`)."""
    if name == "encode":
        parser.add_argument("--kind", required=True, help="sensor kind, e.g. water_meter")
        parser.add_argument("--device-id", required=True,
                            help="8 hex digits (as printed), 0x-hex, or decimal")
        parser.add_argument("--key", required=True, help="128-bit device key, 32 hex digits")
        parser.add_argument("--fcnt", required=True, type=int, help="frame counter")
        parser.add_argument("--tag-len", type=int, choices=(4, 8), default=4)
        parser.add_argument("fields", nargs="*", metavar="FIELD=VALUE",
                            help="readings in their units")
    else:
        parser.add_argument("frame", help="the frame in hex (as the node console's "
                                          "frame=... or `knute gateway tap` print it)")
        parser.add_argument("--key", required=True, help="128-bit device key, 32 hex digits")
        parser.add_argument("--json", action="store_true",
                            help="print the reading as the gateway publishes it on MQTT "
                                 "(docs/schema/reading.schema.json)")
        parser.add_argument("--received-at", metavar="TIME",
                            help="with --json: when the frame was heard, unix seconds or "
                                 "UTC ISO 8601 (default: now); places the hourly profile")
        parser.add_argument("--source", choices=("radio", "serial", "modbus"),
                            default="radio", help="with --json: how the frame arrived "
                                                  "(default radio)")


_MAX_DIGITS = 24      # decimal exponent far beyond any wire integer (2**64 has 20 digits)


def _to_raw(field: dict[str, Any], text: str) -> int:
    mul = field.get("mul", 1)
    div = field.get("div", 1)
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise KnuteError(f"{field['name']}: {text!r} is not a number") from None
    if not number.is_finite():
        raise KnuteError(f"{field['name']}: {text!r} is not a finite number")
    # Wire values are at most 64-bit integers: refuse far larger numbers before any
    # arithmetic (1e999999999 would otherwise become a billion-digit integer).
    if number != 0 and number.adjusted() > _MAX_DIGITS:
        raise KnuteError(f"{field['name']}: {text} is out of range")
    raw = number * div / mul
    if raw != raw.to_integral_value():
        step = Decimal(mul) / Decimal(div)
        raise KnuteError(f"{field['name']}: {text} is not a multiple of its step {step}")
    return int(raw)


def parse_reading(field: dict[str, Any], text: str) -> Any:
    """The raw wire value of one FIELD=VALUE argument."""
    if text == "null":
        return None
    if field["type"] == "series":
        return [_to_raw(field, part) for part in text.split(",") if part]
    if field["type"] == "bits":
        if text.isdecimal():
            return int(text)
        bits = 0
        for part in text.split(","):
            if part not in field["bits"]:
                raise KnuteError(f"{field['name']}: unknown bit {part!r}; "
                                 f"known: {', '.join(field['bits'])}")
            bits |= 1 << field["bits"].index(part)
        return bits
    return _to_raw(field, text)


def run(args: argparse.Namespace) -> int:
    """Print the frame in hex (encode) or the decoded frame as JSON (decode)."""
    from knute.gateway.reasons import describe
    from knute.protocol import frame, kinds
    from knute.protocol.errors import FrameError

    if args.command == "encode":
        kind = kinds.KINDS[kinds.kind_id(args.kind)]
        values: dict[str, Any] = {}
        for item in args.fields:
            name, sep, text = item.partition("=")
            field = kinds.field_by_name(kind, name)
            if not sep or field is None:
                names = ", ".join(f["name"] for f in kind["fields"])
                raise KnuteError(f"{item!r}: expected FIELD=VALUE with FIELD one of {names}")
            values[name] = parse_reading(field, text)
        raw = frame.encode(args.kind, parse_device_id(args.device_id), args.fcnt, values,
                           parse_key(args.key), args.tag_len)
        print(raw.hex())
        return 0
    try:
        raw = bytes.fromhex(args.frame.strip())
    except ValueError:
        raise KnuteError("frame is not hex") from None
    try:
        got = frame.decode(raw, parse_key(args.key))
    except FrameError as err:
        raise KnuteError("frame rejected: " + describe(err.reason)) from None
    if args.json:
        print(json.dumps(mqtt_reading(got, args.received_at, args.source),
                         ensure_ascii=False, indent=2))
        return 0
    kind = kinds.KINDS[got["kind_id"]]
    out = {
        "kind": got["kind"],
        "device": f"{got['device_id']:08x}",
        "fcnt": got["fcnt"],
        "tag_len": got["tag_len"],
        "size": len(raw),
        "readings": kinds.readings(kind, got["values"]),
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


def parse_time(text: str) -> float:
    """Unix seconds from '1790006400' or '2026-09-22T12:00:00Z' (UTC)."""
    import datetime as dt

    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise KnuteError(f"--received-at {text}: use unix seconds or UTC ISO 8601, e.g. "
                         "2026-09-22T12:00:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    # Half a microsecond up: a float just below .859 s would print back as .858.
    return stamp.timestamp() + 5e-7


def mqtt_reading(decoded: dict[str, Any], received_at: str | None,
                 source: str) -> dict[str, Any]:
    """A decoded frame as the gateway's MQTT reading (gateway.message.reading_dict).

    What only a gateway knows is filled in: ``received_at`` (the given time or now),
    one receiver and the gateway named "knute-decode", and the given source.
    """
    import time

    from knute.gateway import message

    return message.reading_dict(
        decoded, device=message.device_name(decoded["device_id"]), gateway_id="knute-decode",
        received_at=time.time() if received_at is None else parse_time(received_at),
        receivers=[{"source": "knute-decode"}], source=source, site=None)
