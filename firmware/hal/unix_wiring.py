# Bench wiring of the unix-port HAL: what firmware.hal.unix.Hal does at boot.
# Each function takes the Hal first; Hal.__getattr__ makes them its methods
# (hal.uart(name) is uart(hal, name)). See firmware/hal/unix.py for the
# config.json "bench" keys and file formats.

import os
import sys

from firmware.hal import NullLed
from firmware.hal.unix import PtyUart


def configure(hal, config):
    """Take the bench wiring and the time settings from config.json."""
    import time

    bench = config["bench"]
    hal.bench = bench
    hal.scale = bench.get("time_scale", 1)
    hal.start_s = bench.get("start_time", hal.start_s)
    stop = bench.get("stop_after_s")
    hal.stop_ms = None if stop is None else stop * 1000
    hal.deep = config["power"]["sleep"] == "deep"
    import random

    seed = bench.get("seed")
    random.seed(int.from_bytes(os.urandom(4), "big") if seed is None else seed)
    hal.t0_ns = time.time_ns() if hal.scale else 0


def wire(hal, group, name):
    """The path config.json "bench" gives for `name` in `group` (uart, pin, ...)."""
    path = (hal.bench.get(group) or {}).get(name)
    if path is None:
        raise OSError("bench." + group + "." + str(name) + " is not wired in config.json")
    return path


def uart(hal, name, baud=115200):
    """The pty (or other serial device path) wired as UART `name`."""
    handle = open(wire(hal, "uart", name), "r+b")  # noqa: SIM115 (open for the node's life)
    # Raw tty with VMIN = VTIME = 0: read(n) returns what is there, at once.
    # (A plain file, e.g. a capture of what the node sends, is no tty.)
    import termios

    fd = handle.fileno()
    try:
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][5] = 0  # VTIME
        attrs[6][6] = 0  # VMIN
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except OSError:
        pass
    return PtyUart(handle)


def i2c(hal, name):
    """The register-image file wired as I2C bus `name` (firmware.drivers.regimage)."""
    from firmware.drivers.regimage import RegImage

    return RegImage(path=wire(hal, "i2c", name))


def pin(hal, name):
    """An input pin whose level comes from a file."""
    from firmware.hal.unix_inputs import FileInput

    return FileInput(wire(hal, "pin", name))


def adc(hal, name):
    """A battery ADC whose millivolts come from a file."""
    from firmware.hal.unix_inputs import FileInput

    return FileInput(wire(hal, "adc", name))


def pulse_source(hal, name, direction, debounce_ms):
    """Pulse events from the file or FIFO wired as `name` (direction is in the lines).

    In deep sleep a simulated ULP counts them into rtc.json (unix_ulp.SimUlp).
    """
    if hal.deep:
        # Imported by a string (longer than a qstr's 10 bytes): the names of
        # the deep-sleep modules stay off every other node's boot path
        # (docs/firmware.md, "Memory", qstrs).
        ulp = __import__("firmware.hal.unix_ulp", None, None, ("pulse_source",))
        return ulp.pulse_source(hal, wire(hal, "pulse", name), debounce_ms)
    from firmware.hal.unix_inputs import FilePulseSource

    return FilePulseSource(hal, wire(hal, "pulse", name), debounce_ms)


def lora_modem(hal, radio):
    """The bench radio file (bench "radio") standing in for the LoRa modem."""
    from firmware.hal import unix_bench

    rx_path = (hal.bench.get("radio") or {}).get("rx_path")
    modem = unix_bench.BenchRadio(hal, wire(hal, "radio", "path"), hal.bench, rx_path)
    modem.configure({"freq_khz": radio["freq_hz"] // 1000, "sf": radio["sf"]})
    return modem


def led(hal):
    """The bench has no LED; the console says everything."""
    return NullLed()


def reset_cause(hal):
    """The bench always starts from power-on."""
    return "power-on"


def safe_mode(hal, reason):
    """Say why on the console and stop (exit status 3), never loop."""
    print("knute: SAFE MODE: " + reason)
    print("knute: fix config.json (or the fault above) and restart the node")
    sys.exit(3)


def reset(hal):
    """A board resets; the bench process ends with status 4."""
    sys.exit(4)

