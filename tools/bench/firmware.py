"""``knute bench firmware``: heap and allocations per send cycle on the MicroPython unix port.

For each role the benchmark builds a bench flash directory (protocol/ and
firmware/ compiled by mpy-cross, a config.json wired to a pty), boots the real
node inside ``micropython -X heapsize=...`` and runs send cycles there:

- water_meter: the role's own send path (values dict and profile list reused,
  one AES object for the node's life), then the naive baseline: a fresh values
  dict and profile list and a new AES key schedule (``block=None``) per frame;
- radio_bridge: receive a bench-radio packet and forward it as a RADIO record
  (role code: integer SNR rounding, the packet passed through as received),
  against a generic baseline that copies the packet and gathers its metadata
  in a dict with a float SNR;
- air_quality (when the role is installed): ``ctx.send(node.values())`` against
  the same naive encoding as the water meter's baseline;
- display: one area-index PUBLISH packet through the role's MQTT packet reader
  into ``on_message`` (the JSON payload of docs/schema/air_index.schema.json,
  its level changing every cycle) and the frame it shows, against a baseline
  that copies the payload and sets every pixel from a fresh tuple. The strip is
  a bytearray-backed stand-in with neopixel.NeoPixel's interface (its write()
  is the board's bit-banging, which allocates nothing), so the bench's own
  strip file does not count.

Each cycle runs with the collector off between two ``micropython.mem_info(1)``
heap dumps: ``allocs_per_cycle`` counts the new heap blocks (allocation heads)
the cycle leaves, ``bytes_per_cycle`` the growth of ``gc.mem_alloc()``, and
``peak_heap_bytes`` is the heap in use at the end of a cycle with the collector
off, i.e. resident code and data plus everything one cycle allocates: the most
heap a send cycle can need. An empty cycle is measured the same way and
subtracted.

Every role is measured on both unix ports (``tools.rig.upy``): the 64-bit one
from PyPI (the top-level figures and ``naive``) and the 32-bit build, whose
small ints and object sizes are a board's (``bits32``: the figures that stand
for an ESP32, RP2040 or STM32). ``--bits 64`` leaves the 32-bit build out.

The send cycles run with downlinks off. The downlink path is measured apart
(``downlink_heap``): each role with an uplink, on each link and build, boots as
a bench node with downlinks on, takes one config downlink by the restart in
place (knute.tools.bench.firmware_downlink) and reports the bytes it had free
after boot, its first send, the apply and the next boot, in 64 KiB on the
32-bit build and in the role's measured need on the 64-bit port where 64 KiB
is not enough (``--no-downlink-heap`` leaves these runs out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from knute.tools.rig.flash import MPY_FLAGS, compile_lib, mpy_cross_command
from knute.tools.rig.ptys import open_pty
from knute.tools.rig.upy import micropython

ROOT = Path(__file__).resolve().parents[2]
KEY_HEX = "000102030405060708090a0b0c0d0e0f"
ROLES = ("water_meter", "radio_bridge", "air_quality", "display")
TIMEOUT_S = 120

# Runs inside the unix port, in the flash directory (compiled to knute_cycle.mpy);
# knute_cycle.json holds [role, variant, cycles]. LAUNCH measures its footprint first.
CYCLE_SCRIPT = r'''
import sys, gc, json, micropython
sys.path.insert(1, "lib")
from protocol import frame, stream


def main():
    with open("knute_cycle.json") as handle:
        role_name, variant, cycles = json.loads(handle.read())
    from firmware import app, boot
    hal, ctx, role = boot.boot()
    app.unload("firmware.roles")
    app.unload("firmware.boot")
    del boot
    node = role.Node(ctx)
    node.start()
    app.unload("firmware.hal.unix_wiring")

    def naive_send(values):
        # A fresh copy of every value, a new AES key schedule, a new record.
        fresh = {}
        for key in values:
            value = values[key]
            fresh[key] = list(value) if isinstance(value, list) else value
        fcnt = ctx.fcnt.take()
        buf = frame.encode(ctx.kind, ctx.device_id, fcnt, fresh, ctx.key, ctx.tag_len)
        ctx.link.port.write(stream.encode_record(stream.REC_FRAME, buf))

    def water(naive):
        if naive:
            values = {"index": node.index_ml // 1000, "profile_end_h": node.hour % 256,
                      "alarms": 0, "battery": 20, "profile": list(node._profile_values())}
            naive_send(values)
        else:
            node._send(hal.time())

    def bridge(naive):
        packet = node.modem.recv(0)
        if not naive:
            node.forward(packet)
            return
        # The generic way: copy the packet, gather the metadata in a dict, floats.
        data = bytes(packet)
        frame.parse_header(data)
        meta = {"rssi": packet.rssi, "snr": packet.snr / 4, "freq": node.freq_hz, "sf": node.sf}
        body = stream.pack_radio(meta["rssi"], int(round(meta["snr"] * 10)), meta["freq"],
                                 meta["sf"], data)
        ctx.link.port.write(stream.encode_record(stream.REC_RADIO, body))

    def air(naive):
        values = node.values()
        if naive:
            naive_send(values)
        else:
            ctx.send(values)

    class Strip:
        # neopixel.NeoPixel's interface and storage; write() sends the buffer out.
        def __init__(self, n):
            self.n = n
            self.buf = bytearray(3 * n)

        def __setitem__(self, i, rgb):
            self.buf[3 * i] = rgb[0]
            self.buf[3 * i + 1] = rgb[1]
            self.buf[3 * i + 2] = rgb[2]

        def fill(self, rgb):
            for i in range(self.n):
                self[i] = rgb

        def write(self):
            return None

    packets = []
    if role_name == "display":
        node.strip = Strip(node.cfg["pixels"])
        topic = node.topic.encode()
        for level in (1, 2, 3, 4, 5, 6):
            doc = ('{"scope":"area","subject":"sentrum","scale":"eaqi","level":%d,'
                   '"band":"b","colour":null,"status":"ok","reasons":[],'
                   '"hour":"2023-11-15T00:00:00Z","updated_at":"2023-11-15T00:00:05Z",'
                   '"valid_until":"2099-01-01T00:00:00Z","pollutant":"pm2_5","scales":'
                   '{"eaqi":{"level":%d,"band":"b","colour":null,"pollutant":"pm2_5",'
                   '"pollutants":{"pm2_5":{"value":12.5,"unit":"ug/m3","averaging":"1h",'
                   '"hours":1,"level":%d}}}}}') % (level, level, level)
            body = bytes((len(topic) >> 8, len(topic) & 255)) + topic + doc.encode()
            n = len(body)
            packets.append(bytes((0x30, (n & 127) | 128, n >> 7)) + body)
    state = [0]

    def show(naive):
        packet = packets[state[0] % len(packets)]
        state[0] += 1
        if naive:
            # The generic way: a copy of the payload, a fresh tuple per pixel.
            payload = bytes(packet[5 + len(node.topic):])
            doc = json.loads(payload.decode())
            colour = tuple(node.palette[doc["scales"]["eaqi"]["level"] - 1])
            for i in range(node.strip.n):
                node.strip[i] = tuple([c for c in colour])
            node.strip.write()
            return
        node.mqtt.reader.feed(packet, node.mqtt._packet)
        node.show(hal.ticks_ms() + state[0] * 100000, hal.time())

    if role_name == "air_quality":
        for name, sample in (("pm1", 83), ("pm2_5", 121), ("pm10", 190), ("temperature", 215),
                             ("humidity", 48), ("pressure", 10132)):
            mean = getattr(node, name, None)
            if mean is not None:
                for i in range(5):
                    mean.add(sample + i)
    cycle = {"water_meter": water, "radio_bridge": bridge, "air_quality": air,
             "display": show}[role_name]
    naive = variant == "naive"

    def nothing(naive):
        return None

    for i in range(cycles + 1):
        step = nothing if i == 0 else cycle
        gc.collect()
        gc.disable()
        print("@@before", gc.mem_alloc())
        micropython.mem_info(1)
        step(naive)
        used = gc.mem_alloc()
        print("@@after", used)
        micropython.mem_info(1)
        print("@@end")
        gc.enable()
'''

LAUNCH = ("import gc,sys;sys.path.insert(1,'lib');from protocol import frame,stream;"
          "gc.collect();a=gc.mem_alloc();import knute_cycle as k;gc.collect();"
          "print('@@harness',gc.mem_alloc()-a);k.main()")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``knute bench firmware``."""
    parser.add_argument("--cycles", type=int, default=8, help="send cycles per role (default 8)")
    parser.add_argument("--heap", default="128k",
                        help="MicroPython heap for the measuring process (default 128k: the "
                             "collector is off during each cycle and the harness is resident; "
                             "both are taken out of the figures)")
    parser.add_argument("--role", action="append", choices=ROLES,
                        help="measure only this role (repeatable)")
    parser.add_argument("--bits", choices=("both", "64", "32"), default="both",
                        help="which unix ports to measure on (default both: the 64-bit figures "
                             "at the top level, the 32-bit ones under bits32)")
    parser.add_argument("--downlink-heap", action=argparse.BooleanOptionalAction, default=True,
                        help="run each role with an uplink through a config downlink on each "
                             "build and print its heap (default on; a few seconds a run)")
    parser.add_argument("--json", action="store_true", help="one JSON object keyed by role")


def _radio_lines(count: int) -> str:
    from knute.protocol import frame

    key = bytes.fromhex(KEY_HEX)
    lines = []
    for n in range(count):
        buf = frame.encode("water_meter", 77, n, {"index": 1000 + n, "profile_end_h": 7,
                                                   "alarms": 0, "battery": 18,
                                                   "profile": [12, 0, 3, 40, 7, 9]}, key)
        lines.append("RX -97 7.25 " + buf.hex())
    return "\n".join(lines) + "\n"


def _config(role: str, link_path: str, pm_path: str) -> dict[str, Any]:
    bench: dict[str, Any] = {"uart": {"link": link_path, "pm": pm_path}, "time_scale": 1,
                             "start_time": 1700006400, "seed": 1,
                             "pulse": {"pulse": "pulses.txt"}, "radio": {"path": "radio.txt"}}
    cfg: dict[str, Any] = {"role": role, "device_id": 4660, "key": KEY_HEX, "board": "unix",
                           "jitter_s": 0, "link": {"type": "uart", "uart": "link"},
                           "bench": bench}
    # The send cycle alone, as the figures in docs/firmware.md were measured: the
    # downlink path's heap is measured apart (downlink_heap, firmware_downlink.py).
    cfg["downlink"] = False
    if role == "water_meter":
        cfg["water"] = {"sends_per_day": 4, "profile_len": 6}
    elif role == "air_quality":
        cfg["air"] = {"pm_sensor": "sds011", "climate": "none"}
    elif role == "display":
        del cfg["key"], cfg["link"]
        bench["strip"] = {"strip": "strip.txt"}
        cfg["display"] = {"area": "sentrum", "mqtt": {"host": "127.0.0.1"},
                          "transition_s": 0, "night": None}
    return cfg


def _heads(dump: list[str]) -> int:
    """Allocation heads in a mem_info(1) heap map: every block that is not free or a tail."""
    count = 0
    for line in dump:
        match = re.match(r"^[0-9a-f]{8}: (.*)$", line)
        if match:
            count += sum(1 for ch in match.group(1) if ch not in ".=m ")
    return count


def _parse(out: str) -> list[dict[str, int]]:
    cycles = []
    for block in out.split("@@before")[1:]:
        before_part, _, rest = block.partition("@@after")
        after_part, _, _ = rest.partition("@@end")
        before_lines = before_part.splitlines()
        after_lines = after_part.splitlines()
        cycles.append({
            "used_before": int(before_lines[0].strip()),
            "used_after": int(after_lines[0].strip()),
            "heads_before": _heads(before_lines),
            "heads_after": _heads(after_lines),
        })
    return cycles


def _measure(role: str, variant: str, cycles: int, heap: str, work: Path,
             upy: Path, bits: int = 64) -> dict[str, Any]:
    flash = work / f"{role}-{variant}-{bits}"
    shutil.copytree(work / "image", flash)
    link_master, link_path = open_pty()
    pm_master, pm_path = open_pty()
    try:
        (flash / "config.json").write_text(json.dumps(_config(role, link_path, pm_path)))
        (flash / "pulses.txt").write_text("@1700006500 40\n@1700010000 25\n")
        (flash / "radio.txt").write_text(_radio_lines(cycles + 2))
        # Compiled like the firmware: compiling source inside a 64 KiB heap is
        # itself more than the node has to spare.
        (flash / "knute_cycle.py").write_text(CYCLE_SCRIPT)
        subprocess.run([*mpy_cross_command(), *MPY_FLAGS, "knute_cycle.py"], cwd=flash,
                       check=True, capture_output=True, timeout=60)
        (flash / "knute_cycle.py").unlink()
        (flash / "knute_cycle.json").write_text(json.dumps([role, variant, cycles]))
        proc = subprocess.run(
            [str(upy), "-X", "heapsize=" + heap, "-c", LAUNCH], cwd=flash,
            capture_output=True, text=True, timeout=TIMEOUT_S)
    finally:
        os.close(link_master)
        os.close(pm_master)
    if proc.returncode != 0 or "@@end" not in proc.stdout:
        from knute.gateway.errors import KnuteError

        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise KnuteError(f"{role} ({variant}) failed on the {bits}-bit unix port: "
                         f"{' | '.join(tail)}")
    harness = int(re.search(r"@@harness (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    parsed = _parse(proc.stdout)
    empty, real = parsed[0], parsed[1:]
    base_heads = empty["heads_after"] - empty["heads_before"]
    base_bytes = empty["used_after"] - empty["used_before"]
    allocs = [c["heads_after"] - c["heads_before"] - base_heads for c in real]
    grown = [c["used_after"] - c["used_before"] - base_bytes for c in real]
    return {
        "peak_heap_bytes": max(c["used_after"] for c in real) - harness,
        "allocs_per_cycle": round(sum(allocs) / len(allocs), 1),
        "bytes_per_cycle": round(sum(grown) / len(grown)),
        "resident_bytes": real[0]["used_before"] - harness,
        "harness_bytes": harness,
        "cycles": len(real),
    }


# Receive-window energy against the uplink's (docs/firmware.md, "Downlinks"):
# computed from the LoRa timings, not measured. Currents: 60 mA on air (as
# `knute airtime`: SX1276 datasheet 2.5.1 plus the awake MCU), 11.5 mA while
# a window listens (SX1276 datasheet table 7, IDDR_L at 125 kHz; the MCU
# waits for the radio's interrupt asleep). With no downlink, RX1 listens 8
# symbols at the uplink's SF and RX2 8 symbols at SF12.
TX_MA = 60.0
RX_MA = 11.5
ENERGY_ROLES = {"water_meter": 4, "air_quality": 144}    # sends a day (the defaults)
ENERGY_SF = 9                                            # config.json radio.sf default


def window_energy(role: str, sf: int = ENERGY_SF) -> dict[str, Any]:
    """µAh a day of a LoRa role's uplinks and of its empty receive windows."""
    from firmware.downlink_window import window_ms
    from knute.protocol.airtime import time_on_air_ms
    from knute.tools.sim.typical import typical_frame

    kind = {"water_meter": "water_meter", "air_quality": "air_quality"}[role]
    sends = ENERGY_ROLES[role]
    frame_len = len(typical_frame(kind)) + 2        # + the dl report asking for the time
    toa = time_on_air_ms(frame_len, sf)
    listen = window_ms(sf, 125000) + window_ms(12, 125000)
    return {"sends_per_day": sends, "sf": sf, "uplink_ms": round(toa, 1),
            "windows_ms": listen,
            "uplink_uah_per_day": round(sends * toa * TX_MA / 3600, 1),
            "windows_uah_per_day": round(sends * listen * RX_MA / 3600, 1)}


def _node_maker(folder: Path, upy: Path, lib: Path, bits: int) -> Any:
    """A firmware_downlink.NodeMaker: the bench node in ``folder`` on that build."""
    from knute.tools.rig.node import BenchNode

    def make_node(config: dict[str, Any], heap: str,
                  uarts: tuple[str, ...] = ("link",)) -> BenchNode:
        return BenchNode(folder, upy, lib, config, heap=heap, uarts=uarts, bits=bits)

    return make_node


def downlink_heap(role: str, builds: dict[int, Path], lib: Path,
                  work: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Bytes free on the downlink path of `role`, by link and build, measured.

    Each (role, link) of knute.tools.bench.firmware_downlink runs as a bench node
    through one config downlink and its restart in place, in 64 KiB on the 32-bit
    build and in ``case_heap_kib`` on the 64-bit port; the figures are the heap
    lines the node prints after boot, its first send, the apply and the next boot.
    """
    from knute.gateway.errors import KnuteError
    from knute.tools.bench import firmware_downlink as fdl

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, link in fdl.CASES:
        if name != role:
            continue
        for bits in sorted(builds, reverse=True):
            kib = fdl.case_heap_kib(role, link, bits)
            make_node = _node_maker(work / f"dl-{role}-{link}-{bits}", builds[bits], lib, bits)
            where = f"{role} ({link}, downlink) on the {bits}-bit unix port in {kib} KiB"
            try:
                run = fdl.run_case(role, link, make_node, bits, heap=f"{kib}k")
                if "MemoryError" in run.console:
                    raise ValueError("MemoryError on the node")
                free = run.free()
            except (AssertionError, ValueError) as exc:
                raise KnuteError(f"{where}: {str(exc).splitlines()[0]}") from exc
            out.setdefault(link, {})[f"bits{bits}"] = {"heap_kib": kib, **free}
    return out


def run(args: argparse.Namespace) -> int:
    """Measure every (chosen) role, optimized and naive; print a table or JSON."""
    from knute.gateway.errors import KnuteError

    builds = {bits: micropython(bits) for bits in (64, 32)
              if args.bits in ("both", str(bits))}
    if args.cycles < 1:
        raise KnuteError("--cycles must be at least 1")
    roles = args.role or [r for r in ROLES if (ROOT / "firmware" / "roles" / (r + ".py")).exists()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="knute-bench-fw-") as tmp:
        work = Path(tmp)
        compile_lib(work / "image" / "lib")
        shutil.copy(ROOT / "firmware" / "main.py", work / "image" / "main.py")
        for role in roles:
            entry: dict[str, Any] = {}
            if 64 in builds:
                entry = _measure(role, "optimized", args.cycles, args.heap, work, builds[64])
                entry["naive"] = _measure(role, "naive", args.cycles, args.heap, work,
                                          builds[64])
                entry["heap"] = args.heap
            if 32 in builds:
                entry["bits32"] = _measure(role, "optimized", args.cycles, args.heap, work,
                                           builds[32], 32)
                entry["bits32"]["heap"] = args.heap
            if role in ENERGY_ROLES:
                entry["energy"] = window_energy(role)
            if args.downlink_heap:
                heap = downlink_heap(role, builds, work / "image" / "lib", work)
                if heap:
                    entry["downlink_heap"] = heap
            results[role] = entry
    from knute.tools import power

    # Battery figures per role, board and power design (tools/power.py: the
    # per-board current table applied to a day of the firmware's power states).
    # Only the roles measured (`--role`): the display has no battery rows.
    power_rows = [row for row in power.rows() if row["role"] in roles]
    if args.json:
        out = {**results, "power": power_rows} if power_rows else results
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(f"send cycle on the MicroPython unix ports (-X heapsize={args.heap}), "
          f"{args.cycles} cycles per role")
    if 64 in builds:
        print("64-bit port")
        print(f"{'role':<13} {'peak heap B':>16} {'naive peak B':>16} {'allocs/cycle':>14} "
              f"{'naive allocs':>14} {'resident B':>12}")
        for role, entry in results.items():
            naive = entry["naive"]
            print(f"{role:<13} {entry['peak_heap_bytes']:>16} {naive['peak_heap_bytes']:>16} "
                  f"{entry['allocs_per_cycle']:>14.1f} {naive['allocs_per_cycle']:>14.1f} "
                  f"{entry['resident_bytes']:>12}")
    if 32 in builds:
        print("32-bit build (a board's word size)")
        print(f"{'role':<13} {'peak heap B':>16} {'allocs/cycle':>14} {'resident B':>12}")
        for role, entry in results.items():
            b32 = entry["bits32"]
            print(f"{role:<13} {b32['peak_heap_bytes']:>16} {b32['allocs_per_cycle']:>14.1f} "
                  f"{b32['resident_bytes']:>12}")
    energy = {role: e["energy"] for role, e in results.items() if "energy" in e}
    if energy:
        print(f"LoRa energy a day at SF{ENERGY_SF} (computed; {TX_MA:g} mA on air, "
              f"{RX_MA:g} mA listening)")
        print(f"{'role':<13} {'sends/day':>10} {'uplink uAh':>12} {'RX1+RX2 uAh':>12}")
        for role, e in energy.items():
            print(f"{role:<13} {e['sends_per_day']:>10} {e['uplink_uah_per_day']:>12} "
                  f"{e['windows_uah_per_day']:>12}")
    heaps = {role: e["downlink_heap"] for role, e in results.items() if "downlink_heap" in e}
    if heaps:
        print("downlink path's heap (measured: one config downlink applied by the restart "
              "in place), bytes free")
        print(f"{'role':<13} {'link':<6} {'build':<7} {'heap KiB':>8} {'boot':>8} "
              f"{'1st send':>8} {'apply':>8} {'next boot':>9}")
        for role, by_link in heaps.items():
            for link, by_bits in by_link.items():
                for build, f in by_bits.items():
                    print(f"{role:<13} {link:<6} {build[4:] + '-bit':<7} {f['heap_kib']:>8} "
                          f"{f['free_after_boot']:>8} {f['free_after_first_send']:>8} "
                          f"{f['free_after_apply']:>8} {f['free_after_next_boot']:>9}")
    if power_rows:
        print_power(power_rows)
    return 0


def print_power(rows: list[dict[str, Any]]) -> None:
    """The power budget table: µAh a day and years on a 3.6 Ah cell, where it goes."""
    print("power budget a day (tools/power.py; water meter 4 frames at SF12, +14 dBm; "
          "air node 144 at SF9), years on a 3.6 Ah cell")
    print(f"{'role':<12} {'board':<12} {'design':<12} {'uAh/day':>9} {'years':>6}  "
          "largest parts (uAh/day)")
    for row in rows:
        parts = sorted(row["parts_uah"].items(), key=lambda kv: -kv[1])[:4]
        spent = ", ".join(f"{name} {value:g}" for name, value in parts)
        print(f"{row['role']:<12} {row['board']:<12} {row['design']:<12} "
              f"{row['uah_per_day']:>9.1f} {row['battery_years']:>6.1f}  {spent}")
