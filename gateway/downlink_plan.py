"""What to send after an uplink: the pure core of the gateway's downlinks.

No I/O: given one verified uplink (its values, counter, end time and how it was
heard) and the device's queued commands, decide which commands to seal, in
which receive window, at which frequency and spreading factor, and whether
the transmitter's EU868 duty cycle allows it (docs/protocol.md 12.6, 12.11).
``gateway.downlink_service`` does the I/O around it.

Receive windows (LoRaWAN class A, EU868 defaults): RX1 opens 1 s after the end
of the uplink on the uplink's own frequency and spreading factor, RX2 2 s
after it on 869.525 MHz at SF12. RX1 is used when the downlink fits its
payload limit and the RX1 sub-band's budget; otherwise RX2 (869.4-869.65 MHz:
10 % duty cycle, 500 mW). Over a serial link (a UART node) there is no radio
between gateway and node: the downlink goes in RX1's slot with the largest
payload (222 bytes) and no duty cycle.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from knute.gateway.errors import KnuteError
from knute.protocol import airtime, kinds
from knute.protocol import downlink as pdl

RX1_DELAY_S = 1.0
RX2_DELAY_S = 2.0
RX2_FREQ_HZ = 869525000
RX2_SF = 12
BW_HZ = 125000
SERIAL_LIMIT = pdl.MAX_DOWNLINK
# A radio window is used only when the downlink can reach its transmitter this long
# before the window opens (a concentrator's just-in-time queue wants it ahead of time).
TX_LEAD_S = 0.2
HOUR_S = 3600.0

# Path kinds: how a device was heard, so how a downlink reaches it
PATH_SERIAL = "serial"              # a UART/RS-485 node on a serial source
PATH_BRIDGE = "bridge"              # a radio-bridge node on a serial source
PATH_PKTFWD = "packet_forwarder"    # a concentrator behind a Semtech packet forwarder


@dataclass(frozen=True)
class Uplink:
    """One verified uplink as the downlink side needs it."""

    device_id: int
    kind: str
    fcnt: int
    values: Mapping[str, Any]
    end_s: float                          # unix seconds at the end of the transmission
    source: str                           # the gateway source's name
    path: str                             # PATH_*
    receiver: Mapping[str, Any] = field(default_factory=dict)
    under_next_key: bool = False          # verified under a pending rotation's key
    heard_s: float | None = None          # the gateway's clock when it arrived (end_s if None)
    epoch: int = 0                        # the device's counter epoch (counter resets)
    snr_db: float | None = None           # the best SNR any receiver reported

    @property
    def report(self) -> tuple[int, list[tuple[int, str, int]]]:
        """(flags, entries) of the uplink's ``dl`` report; (0, []) when it has none."""
        series = self.values.get("dl")
        if not isinstance(series, list) or not series:
            return 0, []
        flags, entries = pdl.parse_report([int(x) for x in series])
        return flags, entries

    @property
    def freq_hz(self) -> int | None:
        """The uplink's frequency, when the receiver reported it."""
        value = self.receiver.get("freq_hz")
        if isinstance(value, int | float):
            return round(value)
        mhz = self.receiver.get("freq")
        return round(float(mhz) * 1e6) if isinstance(mhz, int | float) else None

    @property
    def sf(self) -> int | None:
        """The uplink's spreading factor, when the receiver reported it."""
        value = self.receiver.get("sf")
        if isinstance(value, int):
            return value
        datr = self.receiver.get("datr")
        if isinstance(datr, str) and datr.startswith("SF") and "BW" in datr:
            try:
                return int(datr[2:datr.index("BW")])
            except ValueError:
                return None
        return None

    def alarm_bits(self) -> int:
        """The raw value of the kind's alarm/status bit fields, OR-ed."""
        kind = kinds.KINDS.get(kinds.KIND_IDS.get(self.kind, -1))
        bits = 0
        if kind is None:
            return 0
        for fld in kind["fields"]:
            raw = self.values.get(fld["name"])
            if fld["type"] == "bits" and isinstance(raw, int):
                bits |= raw
        return bits


@dataclass(frozen=True)
class Window:
    """Where and when a downlink goes out."""

    name: str                 # "rx1" | "rx2" | "serial"
    at_s: float               # when the window opens, by the gateway's clock (unix s)
    freq_hz: int
    sf: int
    limit: int                # the largest downlink this window carries
    airtime_ms: float = 0.0
    delay_s: float = RX1_DELAY_S      # after the end of the uplink


class DutyLedger:
    """A transmitter's time on air per EU868 sub-band over the last hour."""

    def __init__(self) -> None:
        self._sent: dict[str, deque[tuple[float, float]]] = {}

    def used_ms(self, band: str, now_s: float) -> float:
        """Time on air in ``band`` in the hour before ``now_s``."""
        log = self._sent.get(band)
        if not log:
            return 0.0
        while log and log[0][0] <= now_s - HOUR_S:
            log.popleft()
        return sum(ms for _, ms in log)

    def fits(self, freq_hz: int, toa_ms: float, now_s: float) -> bool:
        """Whether a transmission of ``toa_ms`` at ``freq_hz`` fits the hour's budget."""
        band, limit = airtime.sub_band(freq_hz, BW_HZ)
        budget = airtime.airtime_budget_ms(limit)
        return self.used_ms(band, now_s) + toa_ms <= budget

    def spend(self, freq_hz: int, toa_ms: float, at_s: float) -> None:
        """Record one transmission."""
        band, _ = airtime.sub_band(freq_hz, BW_HZ)
        self._sent.setdefault(band, deque()).append((at_s, toa_ms))


def windows(up: Uplink) -> list[Window]:
    """The receive windows after ``up``, in order of preference."""
    base = up.end_s if up.heard_s is None else up.heard_s
    if up.path == PATH_SERIAL:
        return [Window("serial", base + RX1_DELAY_S, 0, 0, SERIAL_LIMIT)]
    out: list[Window] = []
    freq, sf = up.freq_hz, up.sf
    if freq is not None and sf is not None and sf in pdl.EU868_MAX_PAYLOAD:
        out.append(Window("rx1", base + RX1_DELAY_S, freq, sf, pdl.EU868_MAX_PAYLOAD[sf]))
    out.append(Window("rx2", base + RX2_DELAY_S, RX2_FREQ_HZ, RX2_SF,
                      pdl.EU868_MAX_PAYLOAD[RX2_SF], delay_s=RX2_DELAY_S))
    return out


def wire_command(cmd_id: int, op: str, args: Mapping[str, Any], up: Uplink) -> list[Any]:
    """The command list entry of one stored command, filled in for this uplink."""
    if op == "time":
        ms = round(up.end_s * 1000)
        return pdl.clock(cmd_id, up.fcnt, ms // 1000, ms % 1000)
    if op == "config":
        return pdl.config(cmd_id, {int(k): int(v) for k, v in args["values"].items()})
    if op == "ack":
        bits = args.get("bits")
        return pdl.ack_alarm(cmd_id, int(bits) if bits is not None else up.alarm_bits())
    if op == "rekey":
        return pdl.rekey(cmd_id, int(args["key_no"]), bytes.fromhex(args["key"]))
    if op == "rekey_done":
        return pdl.rekey_done(cmd_id, int(args["key_no"]))
    if op == "reboot":
        return pdl.reboot(cmd_id)
    if op == "upd_begin":
        return pdl.upd_begin(cmd_id, int(args["update"]), int(args["size"]))
    if op == "upd_chunk":
        return pdl.upd_chunk(cmd_id, int(args["update"]), int(args["offset"]),
                             bytes.fromhex(args["data"]))
    if op == "upd_switch":
        return pdl.upd_switch(cmd_id, int(args["update"]))
    raise KnuteError(f"unknown command {op!r}")


def downlink_size(cmds: Sequence[list[Any]]) -> int:
    """Bytes of a sealed downlink carrying ``cmds``."""
    from knute.protocol import cbor

    return pdl.HEADER_LEN + len(cbor.encode(list(cmds))) + pdl.TAG_LEN


@dataclass(frozen=True)
class Plan:
    """A downlink to seal: the stored commands it carries (by command id) and its window."""

    cmd_ids: tuple[int, ...]
    commands: tuple[list[Any], ...]
    window: Window


def choose(up: Uplink, due: Sequence[tuple[int, str, Mapping[str, Any]]],
           ledger: DutyLedger | None, now_s: float | None = None) -> Plan | None:
    """The downlink to send after ``up``: the first (up to four) of ``due`` (command id,
    op, args) in queue order, in the first window they fit (payload limit, duty cycle).

    None when nothing is due, or no window can carry even the first command.
    """
    if not due:
        return None
    built = [(cid, wire_command(cid, op, args, up)) for cid, op, args in due]
    for win in windows(up):
        chosen: list[tuple[int, list[Any]]] = []
        for cid, cmd in built:
            # In queue order: a command that does not fit ends the downlink, so an
            # update's switch never overtakes its chunks.
            if len(chosen) == pdl.MAX_COMMANDS or downlink_size(
                    [c for _, c in chosen] + [cmd]) > win.limit:
                break
            chosen.append((cid, cmd))
        if not chosen:
            continue
        size = downlink_size([c for _, c in chosen])
        if win.name == "serial":
            return Plan(tuple(c for c, _ in chosen), tuple(c for _, c in chosen), win)
        if now_s is not None and now_s > win.at_s - TX_LEAD_S:
            continue            # too late for this window: the transmitter needs a lead

        toa = airtime.time_on_air_ms(size, win.sf, BW_HZ)
        if ledger is not None and not ledger.fits(win.freq_hz, toa,
                                                  win.at_s if now_s is None else now_s):
            continue
        placed = Window(win.name, win.at_s, win.freq_hz, win.sf, win.limit, toa, win.delay_s)
        return Plan(tuple(c for c, _ in chosen), tuple(c for _, c in chosen), placed)
    return None


def config_values(pairs: Sequence[str]) -> dict[str, int]:
    """``KEY=VALUE`` arguments (a CONFIG_KEYS name such as ``water.sends_per_day``, the
    name without its section, or the code) as {code: value}, each checked against the
    whitelist's range; KnuteError naming the first bad one."""
    if not pairs:
        raise KnuteError("config needs at least one KEY=VALUE")
    if len(pairs) > pdl.MAX_CONFIG:
        raise KnuteError(f"config takes at most {pdl.MAX_CONFIG} values in one command")
    out: dict[str, int] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise KnuteError(f"config value {pair!r} is not KEY=VALUE")
        code = config_code(key.strip())
        try:
            value = int(text.strip(), 0)
        except ValueError:
            raise KnuteError(f"config {key}: {text!r} is not an integer") from None
        row = pdl.config_entry(code)
        assert row is not None
        if pdl.config_check(code, value):
            raise KnuteError(f"config {row[1]}.{row[2]}: {value} is outside {row[3]}..{row[4]}"
                             + (" or does not divide 24" if code == 1 else ""))
        out[str(code)] = value
    return out


def config_code(name: str) -> int:
    """The whitelist code of a configuration key name (or its code as text)."""
    if name.isdigit() and pdl.config_entry(int(name)) is not None:
        return int(name)
    for code, section, key, _, _ in pdl.CONFIG_KEYS:
        if name in (f"{section}.{key}", key):
            return int(code)
    known = ", ".join(f"{s}.{k}" for _, s, k, _, _ in pdl.CONFIG_KEYS)
    raise KnuteError(f"config key {name!r} is not in the whitelist (known: {known})")


def config_name(code: int) -> str:
    """``section.key`` of a whitelist code."""
    row = pdl.config_entry(code)
    return f"{row[1]}.{row[2]}" if row is not None else str(code)


def tmst_at(rx_tmst: int, delay_s: float) -> int:
    """The concentrator's microsecond counter ``delay_s`` after ``rx_tmst`` (wraps at 2^32)."""
    return (rx_tmst + math.floor(delay_s * 1e6)) % (1 << 32)


def update_plan(bundle_bytes: int, sf: int, nodes: int, interval_s: float,
                freq_hz: int = 868100000) -> dict[str, Any]:
    """How long a module bundle takes to reach ``nodes`` nodes over the air at ``sf``.

    Each uplink of a node opens one receive window, which carries one chunk (a
    chunk fills the downlink): a node needs begin + chunks + switch uplinks, at one
    per ``interval_s``. The gateway's transmitter sends every chunk of every node
    within its sub-band's duty cycle (1 % for RX1 on 868.1-868.5 MHz). The fleet
    takes the longer of the two.
    """
    chunk = pdl.chunk_capacity(sf)
    chunks = -(-bundle_bytes // chunk)
    downlinks = chunks + 2                    # upd_begin and upd_switch, one each
    toa_ms = airtime.time_on_air_ms(pdl.EU868_MAX_PAYLOAD[sf], sf, BW_HZ)
    band, limit = airtime.sub_band(freq_hz, BW_HZ)
    budget_s_per_h = airtime.airtime_budget_ms(limit) / 1000
    node_h = downlinks * interval_s / 3600
    fleet_airtime_s = nodes * downlinks * toa_ms / 1000
    duty_h = fleet_airtime_s / budget_s_per_h
    return {"bundle_bytes": bundle_bytes, "sf": sf, "chunk_bytes": chunk, "chunks": chunks,
            "downlinks_per_node": downlinks, "downlink_airtime_ms": round(toa_ms, 1),
            "nodes": nodes, "uplink_interval_s": interval_s,
            "hours_per_node": round(node_h, 2), "sub_band": band,
            "duty_cycle_budget_s_per_h": budget_s_per_h,
            "fleet_airtime_s": round(fleet_airtime_s, 1),
            "hours_for_duty_cycle": round(duty_h, 2),
            "hours_for_fleet": round(max(node_h, duty_h), 2)}
