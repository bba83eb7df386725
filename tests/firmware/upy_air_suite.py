# The air-quality drivers and role on CPython and on the MicroPython unix
# port. CPython is the oracle: tests/firmware/test_drivers_upy.py runs this
# file on both interpreters and requires identical output.
#
# Run from the repository root:  micropython tests/firmware/upy_air_suite.py

import sys

sys.path.insert(0, ".")

from firmware.average import TrimmedMean
from firmware.drivers.bme280 import BME280
from firmware.drivers.pms5003 import PMS5003
from firmware.drivers.regimage import RegImage
from firmware.drivers.regimage_edit import RegImageEdit
from firmware.drivers.sds011 import SDS011
from firmware.roles.air_quality import Node
from tests.firmware import airsim
from tests.upy_checks import hx

_seed = [12345]


def rnd(n):
    """A deterministic pseudo-random integer 0 <= r < n (same on both interpreters)."""
    _seed[0] = (_seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
    return (_seed[0] >> 8) % n


def noisy_stream(make_frame, frame_len, count):
    # Frames with random values, random garbage between them, some corrupted.
    out = bytearray()
    for i in range(count):
        for _ in range(rnd(6)):
            out.append(rnd(256))
        frame = bytearray(make_frame(i))
        if rnd(5) == 0:
            frame[rnd(frame_len)] ^= 1 + rnd(255)
        if rnd(9) == 0:
            frame = frame[:rnd(frame_len)]
        out.extend(frame)
    return bytes(out)


def drain(driver):
    got = []
    for _ in range(1000):
        if not driver.poll():
            break
        got.append("%s/%s/%s" % (driver.pm1, driver.pm2_5, driver.pm10))
    return got


def sds011_case():
    stream = noisy_stream(lambda i: airsim.sds011_frame(rnd(10000), rnd(10000)), 10, 60)
    for chunk in (0, 1, 7):
        uart = airsim.ByteUart(chunk)
        uart.feed(stream)
        sds = SDS011(uart)
        got = drain(sds)
        print("sds011 chunk", chunk, "frames", sds.frames, "bad", sds.bad_frames,
              "skipped", sds.skipped, "replies", sds.replies)
        print("sds011 values", " ".join(got))
    uart = airsim.ByteUart()
    sds = SDS011(uart)
    sds.sleep()
    sds.wake()
    sds.set_active()
    sds.set_query()
    sds.set_continuous()
    sds.query()
    print("sds011 commands", " ".join([hx(b) for b in uart.tx]))


def pms5003_case():
    stream = noisy_stream(lambda i: airsim.pms5003_frame(rnd(1000), rnd(1000), rnd(1000)),
                          32, 40)
    stream += airsim.pms5003_reply(0xE1, 0)
    for chunk in (0, 3, 32):
        uart = airsim.ByteUart(chunk)
        uart.feed(stream)
        pms = PMS5003(uart)
        got = drain(pms)
        print("pms5003 chunk", chunk, "frames", pms.frames, "bad", pms.bad_frames,
              "skipped", pms.skipped, "replies", pms.replies, "last", pms.last_reply)
        print("pms5003 values", " ".join(got))
    uart = airsim.ByteUart()
    pms = PMS5003(uart)
    pms.sleep()
    pms.wake()
    pms.set_passive()
    pms.set_active()
    pms.request()
    print("pms5003 commands", " ".join([hx(b) for b in uart.tx]))


def bme280_case():
    cals = [airsim.EXAMPLE_CALIB]
    for _ in range(5):
        cal = {}
        for key in sorted(airsim.EXAMPLE_CALIB):
            base = airsim.EXAMPLE_CALIB[key]
            spread = 1 + abs(base) // 20
            cal[key] = base + rnd(2 * spread + 1) - spread
        cal["h1"] = rnd(101)
        cal["h3"] = rnd(31)
        cals.append(cal)
    for cal in cals:
        for _ in range(12):
            adc_t = 300000 + rnd(420000)
            adc_p = 250000 + rnd(600000)
            adc_h = rnd(65536)
            image = RegImage(airsim.bme280_image(cal, adc_t, adc_p, adc_h))
            bme = BME280(image)
            bme.begin()
            ok = bme.read()
            print("bme280", adc_t, adc_p, adc_h, ok, bme.t_fine, bme.temperature,
                  bme.pressure, bme.humidity)
    bme = BME280(RegImage(airsim.bme280_image(airsim.EXAMPLE_CALIB, 0x80000, 0x80000,
                                              0x8000)))
    bme.begin()
    print("bme280 skipped", bme.read(), bme.temperature)
    print("bme280 measure_ms", BME280(None).measure_ms(), BME280(None, 0x76, 2, 5, 1).measure_ms())


def average_case():
    for n in (1, 2, 3, 10, 57):
        avg = TrimmedMean()
        for _ in range(n):
            avg.add(rnd(40000) - 20000)
        print("trimmed", n, avg.mean(), avg.mean(10), avg.mean(1024))


def regimage_case():
    image = RegImageEdit("device 76\n88: 01 02 03 # c\ndevice 0x23\nFD: AA BB CC\n")
    print("regimage", image.scan(), hx(image.readfrom_mem(0x76, 0x87, 5)),
          hx(image.readfrom_mem(0x23, 0xFD, 3)))
    for text in ("88: 00", "device 76\nzz: 00", "device 76\nFF: 01 02"):
        try:
            RegImage(text)
            print("regimage accepted", text)
        except ValueError as err:
            print("regimage error", str(err).split(":")[0])
    try:
        image.readfrom_mem(0x50, 0, 1)
    except OSError as err:
        print("regimage enodev", err.args[0])


def role_case():
    air = {"interval_s": 120, "warmup_s": 10, "sample_s": 20, "climate_every_s": 30}
    sensor = airsim.SimSDS011(None)

    def reading(t_ms):
        if t_ms - sensor.woke_at <= 10000:
            return 9999, 9999
        return 100 + (t_ms // 1000) % 7, 200 + (t_ms // 1000) % 5

    sensor.reading = reading
    image = RegImage(airsim.bme280_image(airsim.EXAMPLE_CALIB, airsim.EXAMPLE_ADC_T,
                                         airsim.EXAMPLE_ADC_P, 30000))
    ctx = airsim.FakeCtx(air, sensor, image)
    node = Node(ctx)
    node.start()
    airsim.simulate(node, sensor, ctx, 0, 300000, tick_base=(1 << 30) - 100000)
    names = ("pm1", "pm2_5", "pm10", "temperature", "humidity", "pressure", "status")
    for t, values in ctx.sent:
        print("role sent", t, " ".join(["%s=%s" % (k, values[k]) for k in names]))
    print("role discarded", node.discarded, "fan_ms", sensor.on_ms,
          "commands", len(sensor.commands))


sds011_case()
pms5003_case()
bme280_case()
average_case()
regimage_case()
role_case()
print("done")
