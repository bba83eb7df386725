# Integer arithmetic of the node that must stay exact across 2**30, where a
# 32-bit MicroPython build leaves its small ints for heap integers (2**62 on
# the 64-bit port). Runs on MicroPython and on CPython (the oracle); both must
# print the same lines. The cases come from a JSON file (argv[1]) that the test
# fills with values on both sides of the boundaries:
#
#   ["water", ml_per_pulse, index_ml, hour, [[dt_s, forward, reverse], ...]]
#       the meter's index, hourly slot and the frame's capped index (litres up
#       to 4,294,967,295) as pulses arrive over unix times t = hour*3600 + dt_s
#   ["frame", device_id, fcnt, index, unix_s]
#       one water_meter frame encoded and encrypted (hex): the 32-bit device id
#       and the index cross 2**30; the counter is 24-bit on the wire
#   ["clock", unix_s, ms, up_end_ms, board_ms]
#       the downlink clock: offset_ms and the node's unix time in ms and s
#   ["bme", [dig_T1..dig_H6], adc_t, adc_p, adc_h]
#       BME280 compensation (data sheet 4.2.3 and 8.2)
#
# Run from the repository root:  micropython tests/firmware/upy_bounds.py CASES.json

import json
import sys

sys.path.insert(0, ".")

from firmware import config as fw_config
from firmware.drivers.bme280 import BME280
from firmware.roles import water_meter
from protocol import frame

KEY = bytes(range(16))


class _Store:
    def __init__(self):
        self.data = {}

    def get(self, name, default=None):
        return self.data.get(name, default)

    def put(self, name, value):
        self.data[name] = value


class _Hal:
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


class _Ctx:
    def __init__(self, cfg, now):
        self.config = cfg
        self.hal = _Hal(now)
        self.state = _Store()
        self.sent = []
        self.last_result = 0
        self.retry_s = 60
        self.dl = None          # no downlinks (firmware.context)
        self.duty = None

    def send(self, values):
        self.sent.append(values["index"])
        return True

    def log(self, msg):
        pass


WATER_CFG = fw_config.validate({"role": "water_meter", "device_id": 1, "key": "00" * 16,
                                "board": "unix", "water": {"sends_per_day": 24}})


def water(ml_per_pulse, index_ml, hour, pulses):
    ctx = _Ctx(WATER_CFG, hour * 3600)
    node = water_meter.Node(ctx)
    node.ml_per_pulse = ml_per_pulse
    node.index_ml = node.hour_start_ml = index_ml
    node.hour = hour
    out = []
    for dt, forward, reverse in pulses:
        t = hour * 3600 + dt
        node._roll(t)
        node._add(t, forward, reverse)
        out.append("%d/%d" % (node.index_ml, node.index_ml // 1000))
    node._roll(hour * 3600 + 7200)
    node._send(hour * 3600 + 7200)
    out.append("slots " + " ".join(str(v) for v in node._profile_values()))
    out.append("sent %d" % ctx.sent[-1])
    return " ".join(out)


def frame_case(device_id, fcnt, index, unix_s):
    values = {"index": index, "profile_end_h": (unix_s // 3600) % 256, "alarms": 0,
              "battery": 20, "profile": [1, 0, 2]}
    return frame.encode("water_meter", device_id, fcnt, values, KEY).hex()


def clock(unix_s, ms, up_end_ms, board_ms):
    offset_ms = unix_s * 1000 + ms - up_end_ms
    now_ms = board_ms + offset_ms
    return "%d %d %d %d" % (offset_ms, now_ms, now_ms // 1000, now_ms % 1000)


class _Cal:
    def __init__(self, cal):
        self.cal = tuple(cal)


def bme(cal, adc_t, adc_p, adc_h):
    holder = _Cal(cal)
    BME280.compensate(holder, adc_t, adc_p, adc_h)
    # %s: compensate() gives None where the datasheet divides by zero (var1 == 0)
    return "%s %s %s %s" % (holder.t_fine, holder.temperature, holder.pressure, holder.humidity)


def main():
    with open(sys.argv[1]) as handle:
        cases = json.loads(handle.read())
    for case in cases:
        name = case[0]
        if name == "water":
            print("water", water(case[1], case[2], case[3], case[4]))
        elif name == "frame":
            print("frame", frame_case(case[1], case[2], case[3], case[4]))
        elif name == "clock":
            print("clock", clock(case[1], case[2], case[3], case[4]))
        elif name == "bme":
            print("bme", bme(case[1], case[2], case[3], case[4]))
    print("done", len(cases))


main()
