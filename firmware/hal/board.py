# The part of the HAL that ESP32 and RP2040 boards share: everything goes
# through `machine`, pins come from the board's pin-map file
# (firmware/boards/<board>.py, config.json "board"). The port modules
# (firmware.hal.esp32, firmware.hal.rp2) add what differs: sleep, ADC scaling,
# reset causes.
#
# `machine` and the `lora` drivers are imported inside functions, so this file
# imports (and type-checks) anywhere.

import sys
import time

from firmware.hal import Debouncer, NullLed, NullWatchdog

_EPOCH_2000 = 946684800     # seconds from 1970-01-01 to 2000-01-01


def load_board(name):
    """The PINS dict of firmware/boards/<name>.py."""
    module_name = "firmware.boards." + name
    __import__(module_name)
    return sys.modules[module_name].PINS


class Led:
    """The board's user LED (active high unless the pin map says otherwise)."""

    def __init__(self, pin, active=1):
        self.pin = pin
        self.active = active
        self.set(False)

    def set(self, on):
        """Switch the LED."""
        self.pin.value(self.active if on else 1 - self.active)

    def blink(self, times=1, on_ms=40, off_ms=160):
        """Blink `times` times (blocking: keep it short)."""
        for _ in range(times):
            self.set(True)
            time.sleep_ms(on_ms)
            self.set(False)
            time.sleep_ms(off_ms)


class Adc:
    """Battery voltage through a divider: read_mv() gives millivolts at the cell."""

    def __init__(self, adc, divider, read_uv):
        self.adc = adc
        self.divider = divider
        self.read_uv = read_uv

    def read_mv(self):
        """Millivolts at the cell (median of five readings)."""
        samples = []
        for _ in range(5):
            samples.append(self.read_uv(self.adc))
        samples.sort()
        return int(samples[2] * self.divider) // 1000


class IrqPulseSource:
    """Pulses counted in a pin IRQ (debounced), taken by the role at its next poll.

    The handler does not allocate: two int counters and a Debouncer. With a
    direction input, its level at the pulse decides forward or reverse.
    """

    def __init__(self, machine, pin, direction, debounce_ms):
        self.machine = machine
        self.direction = direction
        self.debouncer = Debouncer(debounce_ms, time.ticks_diff)
        self.forward = 0
        self.reverse = 0
        self.ticks_ms = time.ticks_ms
        pin.irq(trigger=machine.Pin.IRQ_FALLING, handler=self._edge)

    def _edge(self, _pin):
        if not self.debouncer.edge(self.ticks_ms()):
            return
        if self.direction is not None and self.direction.value() == 0:
            self.reverse += 1
        else:
            self.forward += 1

    def next_due(self):
        """The IRQ wakes the board: there is never a scheduled event."""
        return None

    def take(self, now_s):
        """(now_s, forward, reverse) counted since the last take, or None."""
        state = self.machine.disable_irq()
        forward = self.forward
        reverse = self.reverse
        self.forward = 0
        self.reverse = 0
        self.machine.enable_irq(state)
        if not forward and not reverse:
            return None
        return (now_s, forward, reverse)


class BoardHal:
    """machine-based HAL; subclasses set `port` and override what differs."""

    port = "board"
    offset_ms = 0                   # the node's clock minus the RTC's (set by a downlink)
    clock_set = False               # a downlink set the clock since the last reset

    def __init__(self):
        import machine

        self.machine = machine
        self.pins = {}
        self.sleep_mode = "light"
        self.epoch_offset = _EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0
        self.wake_pin = None        # an input that wakes the board from light sleep when low

    def configure(self, config):
        """Load the board's pin map and power settings."""
        self.pins = load_board(config["board"])
        self.sleep_mode = config["power"]["sleep"]

    # -- time ----------------------------------------------------------------

    def ticks_ms(self):
        """time.ticks_ms()."""
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        """time.ticks_diff(a, b)."""
        return time.ticks_diff(a, b)

    def time(self):
        """The node's clock in unix seconds: the RTC plus the downlink clock's offset."""
        return (self.time_ms() + self.offset_ms) // 1000

    def time_ms(self):
        """The RTC in unix milliseconds (whatever the port's epoch), without the offset."""
        return time.time_ns() // 1000000 + self.epoch_offset * 1000

    def set_time(self, unix_s):
        """Set the RTC so that time() gives unix seconds `unix_s`."""
        t = time.gmtime(unix_s - self.epoch_offset - self.offset_ms // 1000)
        self.machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def stopping(self):
        """A board runs until its power goes."""
        return False

    def sleep_ms(self, ms):
        """Sleep: light sleep (pin IRQs wake it), idle, or a plain busy-free wait."""
        if ms <= 0:
            return
        if self.sleep_mode == "light" and ms >= 20:
            if self.wake_pin is not None and self.wake_pin.value() == 0:
                # The contact is closed: light sleep would end at once. Idle
                # briefly instead, until the pulse ends.
                time.sleep_ms(ms if ms < 20 else 20)
            else:
                self.machine.lightsleep(ms)
        else:
            time.sleep_ms(ms)

    def max_sleep_ms(self):
        """No polling needed on a board: IRQs wake it."""
        return 3600000

    def random_below(self, n):
        """A random integer 0 <= r < n (hardware RNG seeded at boot)."""
        import random

        return random.getrandbits(30) % n if n > 0 else 0

    # -- wiring --------------------------------------------------------------

    def _pin_no(self, name):
        number = self.pins.get(name)
        if number is None:
            raise OSError("pin " + str(name) + " is not in the board's pin map")
        return number

    def uart(self, name, baud=115200):
        """machine.UART for pin-map entry <name> = (id, tx, rx)."""
        uid, tx, rx = self._pin_no(name)
        pin = self.machine.Pin
        return self.machine.UART(uid, baudrate=baud, tx=pin(tx), rx=pin(rx), timeout=0)

    def i2c(self, name):
        """machine.I2C for pin-map entry <name> = (id, scl, sda)."""
        bus, scl, sda = self._pin_no(name)
        pin = self.machine.Pin
        return self.machine.I2C(bus, scl=pin(scl), sda=pin(sda), freq=100000)

    def pin(self, name):
        """An input with pull-up (reed contacts, tamper switches)."""
        pin = self.machine.Pin
        return pin(self._pin_no(name), pin.IN, pin.PULL_UP)

    def adc(self, name):
        """Battery ADC for pin-map entry <name> with divider <name>_divider."""
        return Adc(self._make_adc(self._pin_no(name)), self.pins.get(name + "_divider", 2.0),
                   self._read_uv)

    def pulse_source(self, name, direction, debounce_ms):
        """IRQ pulse counting on pin `name` (and a direction input if fitted)."""
        pin = self.pin(name)
        direction_pin = self.pin(direction) if direction else None
        return IrqPulseSource(self.machine, pin, direction_pin, debounce_ms)

    def lora_modem(self, radio):
        """The board's SX126x/SX127x as a micropython-lib lora SyncModem."""
        lora_pins = self._pin_no("lora")
        chip = radio.get("chip") or lora_pins["chip"]
        pin = self.machine.Pin
        spi = self.machine.SPI(lora_pins["spi"], baudrate=2000000, sck=pin(lora_pins["sck"]),
                               mosi=pin(lora_pins["mosi"]), miso=pin(lora_pins["miso"]))
        cfg = lora_settings(radio)
        reset = pin(lora_pins["reset"], pin.OUT) if "reset" in lora_pins else None
        if chip in ("sx1262", "sx1261"):
            import lora  # micropython-lib lora-sync + lora-sx126x

            cls = lora.SX1262 if chip == "sx1262" else lora.SX1261
            return cls(spi, pin(lora_pins["cs"]), busy=pin(lora_pins["busy"]),
                       dio1=pin(lora_pins["dio1"]), reset=reset,
                       dio3_tcxo_millivolts=lora_pins.get("tcxo_mv"), lora_cfg=cfg)
        import lora  # micropython-lib lora-sync + lora-sx127x

        cls = lora.SX1278 if chip == "sx1278" else lora.SX1276
        dio1 = lora_pins.get("dio1")
        return cls(spi, pin(lora_pins["cs"]), dio0=pin(lora_pins["dio0"]),
                   dio1=pin(dio1) if dio1 is not None else None, reset=reset, lora_cfg=cfg)

    def strip(self, name, n):
        """A WS2812 strip of n pixels on pin-map entry <name> (MicroPython's neopixel)."""
        import neopixel

        return neopixel.NeoPixel(self.machine.Pin(self._pin_no(name), self.machine.Pin.OUT), n)

    def network(self, wifi):
        """Join the Wi-Fi network wifi = {"ssid", "password"} and set the clock by NTP.

        Waits up to 20 s for the association; a network that does not answer
        raises OSError (the role keeps retrying its MQTT connection anyway,
        and the interface keeps trying to associate in the background).
        """
        import network

        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if not wlan.isconnected():
            wlan.connect(wifi["ssid"], wifi["password"])
            for _ in range(200):
                if wlan.isconnected():
                    break
                time.sleep_ms(100)
        if not wlan.isconnected():
            raise OSError("Wi-Fi " + wifi["ssid"] + " did not associate")
        try:
            import ntptime

            ntptime.settime()       # UTC; staleness of the index is judged on this clock
        except (ImportError, OSError):
            print("knute: NTP failed: staleness is judged from reception time only")
        return wlan

    def watchdog(self, timeout_ms):
        """machine.WDT (it cannot be stopped once started)."""
        return self.machine.WDT(timeout=timeout_ms)

    def led(self):
        """The board's LED, or a stand-in when it has none."""
        number = self.pins.get("led")
        if number is None:
            return NullLed()
        return Led(self.machine.Pin(number, self.machine.Pin.OUT), self.pins.get("led_active", 1))

    # -- port specifics (overridden) -----------------------------------------

    def _make_adc(self, number):
        return self.machine.ADC(self.machine.Pin(number))

    def _read_uv(self, adc):
        return adc.read_u16() * 3300000 // 65535

    def reset_cause(self):
        """A word for machine.reset_cause()."""
        cause = self.machine.reset_cause()
        names = {
            getattr(self.machine, "PWRON_RESET", -1): "power-on",
            getattr(self.machine, "HARD_RESET", -2): "hard",
            getattr(self.machine, "WDT_RESET", -3): "watchdog",
            getattr(self.machine, "DEEPSLEEP_RESET", -4): "deep-sleep",
            getattr(self.machine, "SOFT_RESET", -5): "soft",
        }
        return names.get(cause, "cause " + str(cause))

    def safe_mode(self, reason):
        """Say why for two minutes (LED fast-blinking), then sleep until reset.

        The REPL stays reachable (Ctrl-C) while the message repeats; deep sleep
        afterwards keeps a field node from draining its cell or resetting in a loop.
        """
        led = None
        try:
            led = self.led()
        except (OSError, ValueError, KeyError, ImportError):
            led = NullLed()
        for _ in range(12):
            print("knute: SAFE MODE: " + reason)
            led.blink(5, 60, 60)
            time.sleep_ms(9000)
        print("knute: SAFE MODE: sleeping until reset")
        self.machine.deepsleep()

    def reset(self):
        """machine.reset()."""
        self.machine.reset()


def null_watchdog():
    """A watchdog stand-in for boards run with power.wdt_s = 0."""
    return NullWatchdog()


def lora_settings(cfg):
    """The micropython-lib `lora_cfg` dict for the radio section of config.json.

    Here, not in firmware.link_lora: only a board builds its modem (once, at boot).
    """
    return {
        "freq_khz": cfg["freq_hz"] // 1000,
        "sf": cfg["sf"],
        "bw": str(cfg["bw_hz"] // 1000),
        "coding_rate": cfg["cr"],
        "preamble_len": cfg["preamble"],
        "output_power": cfg["power_dbm"],
        "syncword": cfg["syncword"],
        "crc_en": True,
        "implicit_header": False,
    }
