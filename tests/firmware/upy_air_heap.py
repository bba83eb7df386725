# Runs on the MicroPython unix port only: the steady-state paths of the air
# drivers and role must not allocate. micropython.heap_lock() turns any heap
# allocation into a MemoryError, so each step runs with the heap locked.
# Prints one "ok <step>" or "ALLOCATES <step>" line per step.
#
# Run from the repository root:  micropython tests/firmware/upy_air_heap.py

import sys

sys.path.insert(0, ".")

import micropython

from firmware.average import TrimmedMean
from firmware.drivers.bme280 import BME280
from firmware.drivers.pms5003 import PMS5003
from firmware.drivers.regimage import RegImage
from firmware.drivers.sds011 import SDS011
from firmware.roles.air_quality import Node
from tests.firmware import airsim


class ChunkUart:
    """Hands out chunks built before the heap is locked; read() allocates nothing."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.pos = 0

    def any(self):
        if self.pos >= len(self.chunks):
            return 0
        return len(self.chunks[self.pos])

    def read(self, n):
        if self.pos >= len(self.chunks):
            return None
        chunk = self.chunks[self.pos]
        if len(chunk) > n:
            return None             # comes with the next read, when there is room
        self.pos += 1
        return chunk

    def write(self, buf):
        return len(buf)


def locked(name, fn):
    # fn takes no arguments: a call with *args would allocate its tuple.
    micropython.heap_lock()
    try:
        result = fn()
        micropython.heap_unlock()
        print("ok", name, result)
    except MemoryError:
        micropython.heap_unlock()
        print("ALLOCATES", name)


def drain(driver, times):
    got = 0
    for _ in range(times):
        if driver.poll():
            got += 1
    return got


bad = bytearray(airsim.sds011_frame(5, 5))
bad[8] ^= 1
sds_chunks = []
for i in range(6):
    frame = airsim.sds011_frame(100 + i, 200 + i)
    sds_chunks.append(frame[:3])
    sds_chunks.append(frame[3:] + b"\x00\x01")
    sds_chunks.append(bytes(bad))
sds = SDS011(ChunkUart(sds_chunks))
locked("sds011.poll", lambda: drain(sds, 40))

pms_chunks = []
for i in range(6):
    frame = airsim.pms5003_frame(i, i + 1, i + 2)
    pms_chunks.append(frame[:20])
    pms_chunks.append(frame[20:] + b"\x42\x00")
pms = PMS5003(ChunkUart(pms_chunks))
locked("pms5003.poll", lambda: drain(pms, 40))

image = RegImage(airsim.bme280_image(airsim.EXAMPLE_CALIB, airsim.EXAMPLE_ADC_T,
                                     airsim.EXAMPLE_ADC_P, 30000))
bme = BME280(image)
bme.begin()
bme.read()


def measure():
    bme.start()
    bme.busy()
    bme.read()
    return bme.temperature


locked("bme280.start+busy+read", measure)

avg = TrimmedMean()


def averaging():
    for value in range(-50, 500):
        avg.add(value)
    return avg.count


locked("trimmed.add", averaging)

# The role between sends: particle frames arriving and being averaged.
sensor_frames = []
for i in range(40):
    sensor_frames.append(airsim.sds011_frame(300 + i % 3, 400))
uart = ChunkUart([])
ctx = airsim.FakeCtx({"interval_s": 600, "warmup_s": 0, "sample_s": 60, "climate": "none"},
                     uart, None)
node = Node(ctx)
node.start()
node.poll(0)
uart.chunks = sensor_frames
uart.pos = 0


def role_polls():
    t = 100
    for _ in range(30):
        node.poll(t)
        t += 500
    return node.pm2_5.count


locked("role.poll (sampling)", role_polls)

# The same across the wrap of ticks_ms(): the ticks run up to 2**30 - 1 and start
# again at 0, and nothing on the way may leave the small ints of a 32-bit build.
wrap_node = Node(ctx)
wrap_node.start()
wrap_start = airsim.FakeHal.TICKS_MASK - 6000
wrap_node.poll(wrap_start)
uart.pos = 0


def role_polls_wrapping():
    t = wrap_start
    mask = airsim.FakeHal.TICKS_MASK
    for _ in range(30):
        wrap_node.poll(t)
        # ticks_add(t, 500) without passing through 2**30 (a heap int on 32 bits)
        t = t + 500 if t <= mask - 500 else t - mask + 499
    return wrap_node.pm2_5.count


locked("role.poll (sampling, ticks wrap)", role_polls_wrapping)
