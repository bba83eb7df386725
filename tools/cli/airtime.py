"""``knute airtime``: LoRa time on air, EU868 duty-cycle budget and battery life.

For each sensor kind the frame is the real one: ``protocol.frame.encode`` of the
typical readings in ``tools/sim/typical.py`` (water meter: index, 6 hourly values,
alarms, battery; air node: PM1/2.5/10, temperature, humidity, pressure,
status). Next to it: the same readings sent over LoRaWAN (13 bytes: MHDR 1,
DevAddr 4, FCtrl 1, FCnt 2, FPort 1, MIC 4) with an OMS-style application
payload under OMS security profile B, byte count in ``OMS_PAYLOAD`` below.

Battery model (defaults from the per-board current table in tools/power.py,
the design it names: deep sleep with the ULP pulse counter on the meter board):
  capacity     3.6 Ah, one A-size Li-SOCl2 cell (Saft LS17500 datasheet: 3.6 Ah)
  sleep        the meter's day without its transmissions, spread over 24 h:
               deep sleep, ULP samples, hourly wake-ups, receive windows,
               radio sleep, regulator, reed pull-up (tools/power.py)
  transmit     radio at +14 dBm plus the awake MCU while on air (tools/power.py)
  self-discharge 1 % of capacity a year (Li-SOCl2 bobbin cells, LS17500 datasheet)
  life_years = capacity / (I_avg * 8766 h + 1 % of capacity per year)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from knute.protocol import airtime
from knute.tools import power

SFS = tuple(range(7, 13))
LORAWAN_OVERHEAD = 13           # MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + FPort 1 + MIC 4
LORAWAN_MAX_SF10_12 = 51        # EU868 FRMPayload limit at DR0..DR2 (SF12..SF10)
HOURS_PER_YEAR = 8766
SELF_DISCHARGE_PER_YEAR = 0.01
DEFAULT_CAPACITY_MAH = 3600.0
_ASSUMED = power.assumed_battery()
DESIGN = f"{_ASSUMED['design']} on {_ASSUMED['board']}"
DEFAULT_SLEEP_UA = float(_ASSUMED["sleep_ua"])
DEFAULT_TX_MA = float(_ASSUMED["tx_ma"])
SENDS_PER_DAY = {"water_meter": 4, "air_quality": 144}

# OMS-style application payload, security profile B (OMS Specification Vol. 2:
# AES-128-CBC "mode 7" with a derived session key, authentication and
# fragmentation layer with an 8-byte CMAC). Over LoRaWAN the wM-Bus link
# layer is not needed (DevAddr addresses the meter), so the payload starts at
# the transport layer with a short header.
_TPL = [("TPL short header: CI, access no., status, config field (2), config ext.", 6)]
_AFL = [("AFL: CI, length, fragment ctl (2), message ctl, counter (4), CMAC (8)", 17)]
OMS_RECORDS: dict[str, list[tuple[str, int]]] = {
    "water_meter": [
        ("2F 2F decryption check", 2),
        ("volume index: DIF, VIF, 4 bytes", 6),
        ("date/time of the profile: DIF, VIF, 4 bytes", 6),
        ("6 hourly values, compact profile: DIF, VIF, VIFE, LVAR, spacing (2), 6x2", 19),
        ("error flags (alarms): DIF, VIF FD 17, 2 bytes", 5),
        ("remaining battery: DIF, VIF FD 74, 2 bytes", 5),
    ],
    "air_quality": [
        ("2F 2F decryption check", 2),
        ("PM1, PM2.5, PM10: 3 x (DIF, manufacturer VIF + VIFE, 2 bytes)", 15),
        ("temperature: DIF, VIF, 2 bytes", 4),
        ("humidity: DIF, VIF FB 1A, 1 byte", 4),
        ("pressure: DIF, VIF, 2 bytes", 4),
        ("status: DIF, VIF FD 17, 1 byte", 4),
    ],
}


def oms_breakdown(kind: str) -> list[tuple[str, int]]:
    """The OMS-style payload of `kind`, part by part (encrypted part padded to 16)."""
    records = OMS_RECORDS[kind]
    plain = sum(n for _, n in records)
    padded = -(-plain // 16) * 16
    parts = [*_TPL, *_AFL, *records]
    if padded > plain:
        parts.append(("AES-CBC padding to whole 16-byte blocks", padded - plain))
    return parts


def oms_payload_len(kind: str) -> int:
    """Bytes of the OMS-style application payload of `kind`."""
    return sum(n for _, n in oms_breakdown(kind))


def knute_frame_len(kind: str) -> int:
    """Bytes of knute's frame of the typical readings of `kind`."""
    from knute.tools.sim.typical import typical_frame

    return len(typical_frame(kind))


@dataclass(frozen=True)
class Battery:
    """Battery model inputs."""

    capacity_mah: float = DEFAULT_CAPACITY_MAH
    sleep_ua: float = DEFAULT_SLEEP_UA
    tx_ma: float = DEFAULT_TX_MA

    def life_years(self, toa_ms: float, sends_per_day: float) -> float:
        """Years one cell lasts at this time on air and send rate."""
        tx_mah_per_day = self.tx_ma * toa_ms / 3_600_000 * sends_per_day
        avg_ma = self.sleep_ua / 1000 + tx_mah_per_day / 24
        per_year = avg_ma * HOURS_PER_YEAR + SELF_DISCHARGE_PER_YEAR * self.capacity_mah
        return self.capacity_mah / per_year


def _limits() -> list[tuple[int, list[str]]]:
    """Distinct duty-cycle limits (1/10000) and the sub-bands that have each."""
    groups: dict[int, list[str]] = {}
    for name, _lo, _hi, limit in airtime.SUB_BANDS:
        groups.setdefault(limit, []).append(name)
    return sorted(groups.items())


def _link_row(nbytes: int, sf: int, sends: float, battery: Battery,
              limit_bytes: int | None = None) -> dict[str, Any]:
    toa = airtime.time_on_air_ms(nbytes, sf)
    row: dict[str, Any] = {
        "time_on_air_ms": round(toa, 3),
        "uplinks_per_hour": {name: airtime.uplinks_per_hour(toa, limit)
                             for name, _lo, _hi, limit in airtime.SUB_BANDS},
        "battery_years": round(battery.life_years(toa, sends), 1),
    }
    if limit_bytes is not None:
        row["fits"] = sf < 10 or limit_bytes <= LORAWAN_MAX_SF10_12
    return row


def table(battery: Battery, sends_per_day: dict[str, float] | None = None) -> dict[str, Any]:
    """Every figure `knute airtime` prints, as one JSON-friendly dict."""
    sends: dict[str, float] = dict(SENDS_PER_DAY)
    sends.update(sends_per_day or {})
    kinds: dict[str, Any] = {}
    for kind in ("water_meter", "air_quality"):
        knute_len = knute_frame_len(kind)
        oms_len = oms_payload_len(kind)
        lorawan_len = LORAWAN_OVERHEAD + oms_len
        kinds[kind] = {
            "sends_per_day": sends[kind],
            "knute_bytes": knute_len,
            "lorawan_bytes": lorawan_len,
            "oms_payload_bytes": oms_len,
            "oms_breakdown": [{"part": part, "bytes": n} for part, n in oms_breakdown(kind)],
            "rows": [{"sf": sf,
                      "knute": _link_row(knute_len, sf, sends[kind], battery),
                      "lorawan": _link_row(lorawan_len, sf, sends[kind], battery, oms_len)}
                     for sf in SFS],
        }
    return {
        "radio": {"bw_hz": 125000, "cr": "4/5", "preamble": 8, "explicit_header": True,
                  "crc": True, "ldro": "SF11/12"},
        "battery": {"design": DESIGN, "capacity_mah": battery.capacity_mah,
                    "sleep_ua": battery.sleep_ua,
                    "tx_ma": battery.tx_ma, "self_discharge_per_year": SELF_DISCHARGE_PER_YEAR},
        "sub_bands": [{"name": name, "low_hz": lo, "high_hz": hi, "limit_percent": limit / 100}
                      for name, lo, hi, limit in airtime.SUB_BANDS],
        "lorawan_overhead_bytes": LORAWAN_OVERHEAD,
        "kinds": kinds,
    }


def _percent(limit: int) -> str:
    return f"{limit / 100:g} %"


def _columns() -> list[str]:
    cols = ["SF", "ms"]
    for limit, names in _limits():
        cols.append(f"/h {_percent(limit)}")
        del names
    cols.append("years")
    return cols


def _cells(row: dict[str, Any]) -> list[str]:
    cells = [f"{row['time_on_air_ms']:.1f}"]
    per_band = row["uplinks_per_hour"]
    for _limit, names in _limits():
        cells.append(str(per_band[names[0]]))
    cells.append(f"{row['battery_years']:.1f}")
    if row.get("fits") is False:
        cells[0] += "*"
    return cells


def render_text(data: dict[str, Any]) -> str:
    """The plain-text report (golden-tested)."""
    bat = data["battery"]
    lines = [
        "LoRa time on air: 125 kHz, CR 4/5, explicit header, CRC, 8-symbol preamble, "
        "low data-rate optimisation at SF11/12",
        "Uplinks per hour: EU868 duty cycle per sub-band, "
        + "; ".join(f"{_percent(limit)} = {', '.join(names)}" for limit, names in _limits()),
        f"Battery ({bat['design']}, tools/power.py): {bat['capacity_mah'] / 1000:g} Ah cell, "
        f"{bat['sleep_ua']:g} uA asleep, "
        f"{bat['tx_ma']:g} mA on air, {bat['self_discharge_per_year'] * 100:g} %/year "
        "self-discharge",
        "",
    ]
    header = _columns()
    for kind, info in data["kinds"].items():
        lines.append(
            f"{kind}: {info['sends_per_day']} sends/day; knute frame {info['knute_bytes']} B | "
            f"LoRaWAN {LORAWAN_OVERHEAD} B + OMS-style payload {info['oms_payload_bytes']} B "
            f"= {info['lorawan_bytes']} B")
        cols = [*header, "|", *header[1:]]
        rows = [[str(r["sf"]), *_cells(r["knute"]), "|", *_cells(r["lorawan"])]
                for r in info["rows"]]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines.append("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
        for r in rows:
            lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if any(r["lorawan"].get("fits") is False for r in info["rows"]):
            lines.append(f"  * over LoRaWAN's {LORAWAN_MAX_SF10_12}-byte EU868 payload limit "
                         "at SF10-12: needs fragmentation")
        lines.append("  OMS-style payload: " + "; ".join(
            f"{p['part']} {p['bytes']}" for p in info["oms_breakdown"]))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_rich(data: dict[str, Any]) -> None:
    """The report as rich tables on a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(render_text(data).split("\n\n")[0])
    for kind, info in data["kinds"].items():
        tbl = Table(title=f"{kind}: knute {info['knute_bytes']} B vs LoRaWAN + OMS-style "
                          f"{info['lorawan_bytes']} B ({info['sends_per_day']} sends/day)")
        header = _columns()
        tbl.add_column("SF", justify="right")
        for side in ("knute", "LoRaWAN"):
            for col in header[1:]:
                tbl.add_column(f"{side} {col}", justify="right")
        for r in info["rows"]:
            tbl.add_row(str(r["sf"]), *_cells(r["knute"]), *_cells(r["lorawan"]))
        console.print(tbl)
        console.print("OMS-style payload: " + "; ".join(
            f"{p['part']} {p['bytes']}" for p in info["oms_breakdown"]))


def add_arguments(parser: argparse.ArgumentParser, name: str = "airtime") -> None:
    """Options of ``knute airtime``."""
    parser.add_argument("--payload", type=int, metavar="BYTES",
                        help="time on air of one PHY payload of this many bytes")
    parser.add_argument("--sf", type=int, choices=range(6, 13), metavar="6..12",
                        help="spreading factor for --payload (default 12)")
    parser.add_argument("--bw", type=int, default=125000, choices=(125000, 250000, 500000),
                        help="bandwidth in Hz for --payload (default 125000)")
    parser.add_argument("--capacity-mah", type=float, default=DEFAULT_CAPACITY_MAH,
                        help=f"battery capacity (default {DEFAULT_CAPACITY_MAH:g} mAh)")
    parser.add_argument("--sleep-ua", type=float, default=DEFAULT_SLEEP_UA,
                        help=f"average current asleep (default {DEFAULT_SLEEP_UA:g} uA)")
    parser.add_argument("--tx-ma", type=float, default=DEFAULT_TX_MA,
                        help=f"current while transmitting (default {DEFAULT_TX_MA:g} mA)")
    parser.add_argument("--water-sends", type=float, metavar="PER_DAY",
                        help=f"water meter sends per day (default {SENDS_PER_DAY['water_meter']})")
    parser.add_argument("--air-sends", type=float, metavar="PER_DAY",
                        help=f"air node sends per day (default {SENDS_PER_DAY['air_quality']})")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Print one time on air (--payload) or the full table."""
    from knute.gateway.errors import KnuteError

    if args.payload is not None:
        if not 0 <= args.payload <= 255:
            raise KnuteError("--payload must be 0..255 bytes (the LoRa PHY limit)")
        sf = args.sf if args.sf is not None else 12
        toa = round(airtime.time_on_air_ms(args.payload, sf, args.bw), 3)
        if args.json:
            print(json.dumps({"payload": args.payload, "sf": sf, "time_on_air_ms": toa}))
        else:
            print(f"{args.payload} bytes at SF{sf}/{args.bw // 1000} kHz: {toa:.3f} ms")
        return 0
    for option, value, least in (("--capacity-mah", args.capacity_mah, "positive"),
                                 ("--sleep-ua", args.sleep_ua, "positive"),
                                 ("--tx-ma", args.tx_ma, "positive"),
                                 ("--water-sends", args.water_sends, "zero or more"),
                                 ("--air-sends", args.air_sends, "zero or more")):
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (value == 0 and least == "positive"):
            raise KnuteError(f"{option} must be a finite number, {least}; got {value:g}")
    sends: dict[str, float] = {}
    if args.water_sends is not None:
        sends["water_meter"] = args.water_sends
    if args.air_sends is not None:
        sends["air_quality"] = args.air_sends
    data = table(Battery(args.capacity_mah, args.sleep_ua, args.tx_ma), sends)
    if args.json:
        print(json.dumps(data))
    elif sys.stdout.isatty():
        render_rich(data)
    else:
        sys.stdout.write(render_text(data))
    return 0
