"""``knute protocol sizes``: what the same readings cost as a knute frame, SenML-CBOR and JSON.

SenML-CBOR follows RFC 8428 section 6 (integer labels: bn -2, bt -3, n 0, u 1,
v 2, vb 4, t 6) with one base name and base time and one record per value, the
hourly profile as six records with relative times. It is sent in the clear:
the knute frame is encrypted and authenticated, so the comparison favours
SenML. JSON is the same readings as one compact object with short keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import cbor2

from knute.tools.sim.typical import TYPICAL, TYPICAL_DEVICE_ID, TYPICAL_FCNT, typical_frame

BASE_TIME = 1_790_000_000  # a send time in 2026, seconds since the epoch

# RFC 8428 SenML units for the kinds' units.
SENML_UNITS = {"L": "l", "L/h": "l/h", "%": "%", "µg/m³": "ug/m3", "°C": "Cel",
               "hPa": "hPa", "h": "h"}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``knute protocol sizes [--json]``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sizes = sub.add_parser("sizes", help="frame sizes against SenML-CBOR and JSON")
    sizes.add_argument("--json", action="store_true", help="print one JSON object")


def senml_records(kind_name: str, values: dict[str, Any]) -> list[dict[int, Any]]:
    """The readings as a SenML pack with integer labels (RFC 8428 section 6)."""
    from knute.protocol import kinds

    kind = kinds.KINDS[kinds.kind_id(kind_name)]
    records: list[dict[int, Any]] = []
    for field in kind["fields"]:
        name = field["name"]
        if name not in values or name == "profile_end_h":
            continue
        raw = values[name]
        if field["type"] == "bits":
            for bit in kinds.bit_names(field, raw) or ["ok"]:
                records.append({0: f"{name}.{bit}", 4: bit != "ok"})
            continue
        unit = SENML_UNITS.get(field["unit"], field["unit"])
        if field["type"] == "series":
            for age, litres in enumerate(reversed(kinds.scaled(field, raw))):
                records.append({0: name, 1: unit, 2: litres, 6: -3600 * age})
            continue
        records.append({0: name, 1: unit, 2: kinds.scaled(field, raw)})
    records[0].update({-2: f"urn:dev:knute:{TYPICAL_DEVICE_ID:08x}:", -3: BASE_TIME})
    return records


def json_object(kind_name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The readings as one compact JSON object, scaled to their units."""
    from knute.protocol import kinds

    kind = kinds.KINDS[kinds.kind_id(kind_name)]
    out: dict[str, Any] = {"dev": f"{TYPICAL_DEVICE_ID:08x}", "fcnt": TYPICAL_FCNT,
                           "t": BASE_TIME}
    for name, reading in kinds.readings(kind, values).items():
        out[name] = reading["value"] if isinstance(reading, dict) else reading
    return out


def sizes() -> dict[str, dict[str, int]]:
    """Bytes per kind: the knute frame, SenML-CBOR and JSON of the typical readings."""
    result = {}
    for kind_name, values in TYPICAL.items():
        senml = cbor2.dumps(senml_records(kind_name, values), canonical=True)
        text = json.dumps(json_object(kind_name, values), separators=(",", ":"),
                          ensure_ascii=False).encode()
        result[kind_name] = {"frame": len(typical_frame(kind_name)),
                             "senml_cbor": len(senml), "json": len(text)}
    return result


def run(args: argparse.Namespace) -> int:
    """Print the size table (or one JSON object with --json)."""
    table = sizes()
    if args.json:
        json.dump(table, sys.stdout)
        print()
        return 0
    print(f"{'kind':<12} {'knute frame':>12} {'SenML-CBOR':>11} {'JSON':>6}  frame/SenML")
    for kind_name, row in table.items():
        ratio = row["frame"] / row["senml_cbor"]
        print(f"{kind_name:<12} {row['frame']:>10} B {row['senml_cbor']:>9} B "
              f"{row['json']:>4} B  {ratio:>10.2f}")
    print("knute frames are encrypted and authenticated (AES-128-CCM, 4-byte tag);")
    print("the SenML-CBOR and JSON figures carry no security at all.")
    return 0
