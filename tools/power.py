"""Per-board current table: a day of power states -> µAh per day -> battery years.

The firmware accounts the milliseconds it spends in each power state per day
(firmware/power.py: deep sleep, light sleep, idle, awake, receive windows,
transmit per SF and output power). This module holds what each state draws
on each board, every figure with its datasheet source, and turns a day of
states into µAh a day and years on one cell. ``knute bench firmware``,
``knute airtime`` and ``knute plan`` all take their battery figures from here
and name the power design they assume.

Designs:
  light_sleep  the CPU light-sleeps between pulses; a pin IRQ counts them in RAM
               (every supported ESP32 board today; RP2040 boards idle instead).
  deep_sleep   the CPU deep-sleeps; the ESP32's ULP coprocessor samples the reed
               input every ``ULP_PERIOD_MS`` and counts edges in RTC memory
               (docs/firmware.md, "Power"); the CPU wakes on the RTC timer at
               each hour's end (to close the hour) and for each send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CELL_MAH = 3600.0               # Saft LS17500, A-size Li-SOCl2: 3.6 Ah (datasheet)
SELF_DISCHARGE_PER_YEAR = 0.01  # LS17500 datasheet: < 1 % a year at +20 °C
HOURS_PER_YEAR = 8766
DESIGNS = ("light_sleep", "deep_sleep")

# The ULP pulse counter (tools/ulp.py): one sample every ULP_PERIOD_MS; each
# wake-up runs ULP_SAMPLE_US with the ULP and RTC slow domain on.
ULP_PERIOD_MS = 10
ULP_SAMPLE_US = 60
# A deep-sleep wake-up of the main CPU: ROM boot, MicroPython start, restore
# from RTC memory, take the ULP count, close the hour: measured figures for
# MicroPython on ESP32 are 0.5-1 s; 0.8 s is taken here.
WAKE_MS = 800


@dataclass(frozen=True)
class Board:
    """What one board's parts draw, each figure with its source (mA unless named)."""

    name: str
    mcu: str
    awake_ma: float             # CPU running, radio in standby
    light_ua: float             # MCU light sleep
    deep_ua: float              # MCU deep sleep, RTC timer + RTC memory on
    ulp_ua: float               # extra while the ULP runs (0: no ULP on this board)
    radio_sleep_ua: float
    rx_ma: float                # radio receiving (LoRa, 125 kHz)
    tx_ma: dict[int, float]     # radio transmitting, by output power in dBm
    regulator_ua: float         # the regulator's quiescent current
    pulse_ua: float             # reed input pull-up while the contact is closed
    sources: dict[str, str] = field(default_factory=dict)

    def tx_at(self, dbm: int) -> float:
        """mA on air at `dbm` (the next table step up)."""
        for step in sorted(self.tx_ma):
            if dbm <= step:
                return self.tx_ma[step]
        return self.tx_ma[max(self.tx_ma)]


_ESP32 = {
    "awake": "ESP32 datasheet v4.x, table 'Power consumption by power modes': modem-sleep, "
             "80 MHz, 20-31 mA",
    "light": "ESP32 datasheet, same table: light-sleep 0.8 mA",
    "deep": "ESP32 datasheet, same table: deep-sleep, RTC timer + RTC memory 10 uA",
    "ulp": "ESP32 datasheet, same table: deep-sleep with the ULP co-processor powered on "
           "150 uA",
}
_ESP32S3 = {
    "awake": "ESP32-S3 datasheet v1.x, table 'Current consumption in modem-sleep': 80 MHz, "
             "about 22 mA",
    "light": "ESP32-S3 datasheet, table 'Current consumption in low-power modes': "
             "light-sleep 240 uA",
    "deep": "ESP32-S3 datasheet, same table: deep-sleep, RTC memory and RTC peripherals on "
            "8 uA",
    "ulp": "ESP32-S3 datasheet, same table: deep-sleep with the ULP co-processor on 170 uA "
           "(taken as the ESP32's 150 uA)",
}
_SX1276 = {
    "radio_sleep": "SX1276 datasheet rev. 7, table 6: IDDSL sleep 0.2 uA",
    "rx": "SX1276 datasheet, table 6: IDDR_L LoRa 125 kHz 11.5 mA",
    "tx": "SX1276 datasheet, table 6: IDDT RFO +13 dBm 29 mA (14 dBm taken as 29 mA), "
          "PA_BOOST +17 dBm 87 mA, +20 dBm 120 mA",
}
_SX1262 = {
    "radio_sleep": "SX1262 datasheet rev. 2.1, table 3-5: sleep with warm start 0.6 uA",
    "rx": "SX1262 datasheet, table 3-5: RX boosted, DC-DC, 125 kHz 5.3 mA",
    "tx": "SX1262 datasheet, table 3-6/3-7: +14 dBm 45 mA, +17 dBm 58 mA, +22 dBm 118 mA",
}
_PULSE = "reed input pulled up by 1 MOhm at 3.3 V: 3.3 uA while the contact is closed"

BOARDS: dict[str, Board] = {
    # A dev board: its LDO and USB bridge were made for USB power.
    "heltec_v2": Board("heltec_v2", "ESP32", 25.0, 800.0, 10.0, 150.0, 0.2, 11.5,
                       {14: 29.0, 17: 87.0, 20: 120.0}, 55.0, 3.3, {
                           **_ESP32, **_SX1276, "pulse": _PULSE,
                           "regulator": "AP2112K-3.3 datasheet: quiescent 55 uA typ."}),
    "heltec_v3": Board("heltec_v3", "ESP32-S3", 22.0, 240.0, 8.0, 150.0, 0.6, 5.3,
                       {14: 45.0, 17: 58.0, 22: 118.0}, 40.0, 3.3, {
                           **_ESP32S3, **_SX1262, "pulse": _PULSE,
                           "regulator": "ME6211C33 datasheet: quiescent 40 uA typ."}),
    # The meter board: the same ESP32 + SX1276 on the cell, a nano-power LDO,
    # no USB bridge; the board a field meter is built on.
    "meter_esp32": Board("meter_esp32", "ESP32", 25.0, 800.0, 10.0, 150.0, 0.2, 11.5,
                         {14: 29.0, 17: 87.0, 20: 120.0}, 0.025, 3.3, {
                             **_ESP32, **_SX1276, "pulse": _PULSE,
                             "regulator": "TPS7A02 datasheet: quiescent 25 nA typ."}),
    "pico_sx1262": Board("pico_sx1262", "RP2040", 20.0, 20000.0, 0.0, 0.0, 0.6, 5.3,
                         {14: 45.0, 17: 58.0, 22: 118.0}, 60.0, 3.3, {
                             "awake": "RP2040 datasheet, section 5.x: about 20 mA at 125 MHz",
                             "light": "RP2040 idles (time.sleep_ms): the CPU clock runs, "
                                      "taken as the awake figure",
                             **_SX1262, "pulse": _PULSE,
                             "regulator": "RT6150B datasheet: quiescent 60 uA"}),
}
# Sensors of the air node (mA while measuring; the node is mains or solar powered).
AIR_SENSORS = {
    "sds011": (70.0, "SDS011 datasheet v1.3: working current 70 mA +- 10 mA"),
    "bme280": (0.0036, "BME280 datasheet table 1: 3.6 uA at 1 Hz humidity+pressure+temp"),
}
# Which boards each role and design is figured for.
ROLE_BOARDS = {
    "water_meter": [("heltec_v2", "light_sleep"), ("heltec_v3", "light_sleep"),
                    ("meter_esp32", "light_sleep"), ("meter_esp32", "deep_sleep"),
                    ("pico_sx1262", "light_sleep")],
    "air_quality": [("heltec_v2", "light_sleep")],
}


def day_uah(board: Board, day: dict[str, Any], closed_s: float = 0.0) -> dict[str, float]:
    """µAh of each part in one day of power states (firmware/power.py's line as a dict).

    ``day`` holds ms for deep, light, idle, awake, rx, ulp (ULP running, in
    deep sleep) and tx ({(sf, dbm): ms}); ``closed_s`` is how long the reed
    contact was closed that day.
    """
    h = 1 / 3_600_000      # ms -> h
    idle_ma = board.awake_ma
    parts = {
        "deep_sleep": day.get("deep", 0) * h * board.deep_ua,
        "ulp": day.get("ulp", 0) * h * board.ulp_ua,
        "light_sleep": day.get("light", 0) * h * board.light_ua,
        "idle": day.get("idle", 0) * h * idle_ma * 1000,
        "awake": day.get("awake", 0) * h * board.awake_ma * 1000,
        "rx": day.get("rx", 0) * h * board.rx_ma * 1000,
        "tx": sum(ms * h * board.tx_at(dbm) * 1000 for (_sf, dbm), ms in
                  day.get("tx", {}).items()),
        "radio_sleep": 24 * board.radio_sleep_ua,
        "regulator": 24 * board.regulator_ua,
        "pulse_input": closed_s / 3600 * board.pulse_ua,
        "self_discharge": SELF_DISCHARGE_PER_YEAR * CELL_MAH * 1000 * 24 / HOURS_PER_YEAR,
    }
    return {name: round(value, 1) for name, value in parts.items()}


def years(uah_per_day: float, cell_mah: float = CELL_MAH) -> float:
    """Years one cell lasts at `uah_per_day` (self-discharge included in the day)."""
    return cell_mah * 1000 / uah_per_day / (HOURS_PER_YEAR / 24)


def model_day(role: str, design: str, sends: int, sf: int, dbm: int, frame_len: int,
              awake_ms_per_send: float = 150.0) -> dict[str, Any]:
    """A day of power states of `role` under `design`, as the firmware accounts it.

    Light sleep: awake ``awake_ms_per_send`` for each send plus 10 ms for each
    hour closed and each of the day's pulse events (a wake-up from light sleep
    costs little). Deep sleep: a ``WAKE_MS`` wake-up at each hour's end (the
    sends fall on hour ends), the ULP running ``ULP_SAMPLE_US`` every
    ``ULP_PERIOD_MS``. Receive windows: RX1 8 symbols at the uplink's SF,
    RX2 8 symbols at SF12 (firmware.downlink_window).
    """
    from firmware.downlink_window import window_ms
    from knute.protocol.airtime import time_on_air_ms

    day_ms = 86_400_000
    toa = int(time_on_air_ms(frame_len, sf) + 0.999)
    tx = {(sf, dbm): sends * toa}
    rx = sends * (window_ms(sf, 125000) + window_ms(12, 125000))
    on_air = sends * toa + rx
    if design == "deep_sleep":
        awake = 24 * WAKE_MS + sends * awake_ms_per_send
        ulp = day_ms // ULP_PERIOD_MS * ULP_SAMPLE_US // 1000
        deep = day_ms - awake - on_air
        return {"deep": deep, "ulp": ulp, "light": 0, "idle": 0, "awake": awake, "rx": rx,
                "tx": tx}
    events = 24 + (400 if role == "water_meter" else 0)
    awake = sends * awake_ms_per_send + events * 10
    rest = day_ms - awake - on_air
    return {"deep": 0, "ulp": 0, "light": rest, "idle": 0, "awake": awake, "rx": rx, "tx": tx}


# A household's day: about 400 L at 1 L/pulse, the contact closed half of each
# pulse at 6 L/min (5 s a pulse): 2,000 s a day.
CLOSED_S_PER_DAY = 2000.0


def rows(sf: int = 12, dbm: int = 14) -> list[dict[str, Any]]:
    """The ``"power"`` rows of ``knute bench firmware --json``: one per role, board, design."""
    from knute.tools.sim.typical import typical_frame

    out = []
    for role, boards in ROLE_BOARDS.items():
        sends = 4 if role == "water_meter" else 144
        frame_len = len(typical_frame(role)) + 2
        for name, design in boards:
            board = BOARDS[name]
            day = model_day(role, design, sends, sf if role == "water_meter" else 9, dbm,
                            frame_len)
            if board.mcu == "RP2040":
                day["idle"], day["light"] = day["light"], 0
            parts = day_uah(board, day, CLOSED_S_PER_DAY if role == "water_meter" else 0)
            if role == "air_quality":
                # The PM sensor runs for 30 s before each of the node's sends.
                ma, _src = AIR_SENSORS["sds011"]
                parts["sensors"] = round(sends * 30 / 3600 * ma * 1000, 1)
            total = round(sum(parts.values()), 1)
            out.append({"role": role, "board": name, "design": design, "sends_per_day": sends,
                        "uah_per_day": total, "battery_years": round(years(total), 1),
                        "parts_uah": parts})
    return out


ASSUMED = ("meter_esp32", "deep_sleep")     # the design `knute airtime` and `knute plan` assume


def assumed_battery() -> dict[str, Any]:
    """The average current asleep and on air of the assumed design (``ASSUMED``).

    Asleep: the water meter's day at 4 frames on SF12 without its radio
    transmissions and the cell's self-discharge, spread over 24 h (the
    callers add both back); on air: the radio at +14 dBm plus the awake MCU.
    """
    from knute.tools.sim.typical import typical_frame

    name, design = ASSUMED
    board = BOARDS[name]
    day = model_day("water_meter", design, 4, 12, 14, len(typical_frame("water_meter")) + 2)
    parts = day_uah(board, day, CLOSED_S_PER_DAY)
    asleep = sum(parts.values()) - parts["tx"] - parts["self_discharge"]
    return {"board": name, "design": design, "sleep_ua": round(asleep / 24, 1),
            "tx_ma": board.tx_at(14) + board.awake_ma}
