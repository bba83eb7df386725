# ESP32 / ESP32-S3 boards (Heltec WiFi LoRa 32, LilyGO T3, ...).
#
# Differences from the shared board HAL:
#   - light sleep is woken by the pulse pin (ext0 wake-up on its low level,
#     so it must be an RTC GPIO, as in every ESP32 pin map here): the board
#     wakes at the start of each pulse, the IRQ counts it at once, and flow
#     windows stay exact while the node sleeps between pulses;
#   - the ADC is calibrated by the IDF: ADC.read_uv() gives microvolts;
#   - the RNG is the hardware one (random is seeded from os.urandom at boot);
#   - power.sleep "deep": the ULP coprocessor counts the pulses (tools/ulp.py,
#     its image "ulp.bin" written by provisioning) in RTC slow memory while
#     the CPU deep-sleeps; each deep sleep ends in a reset and a new boot.

from firmware.hal.board import BoardHal

_RTC_SLOW = 0x50000000      # RTC slow memory (ESP32 TRM, "System and Memory": RTC SLOW)
_ULP_PERIOD_US = 10000      # tools/ulp.PERIOD_MS
_ULP_ENTRY = 10             # tools/ulp.ENTRY: the words before the code
_ULP_PADS = 9               # tools/ulp.WORDS "pads": 1 once the ULP set up its input pads


class Hal(BoardHal):
    """ESP32 HAL."""

    port = "esp32"

    def configure(self, config):
        """Pin map, 11 dB ADC attenuation, pulse wake from light sleep, RNG seed."""
        BoardHal.configure(self, config)
        import os
        import random

        random.seed(int.from_bytes(os.urandom(4), "big"))
        pins = self.pins
        if "vext" in pins:
            # Heltec boards switch the sensor/battery-divider rail with Vext (active low).
            self.machine.Pin(pins["vext"], self.machine.Pin.OUT, value=0)
        if "adc_ctrl" in pins:
            self.machine.Pin(pins["adc_ctrl"], self.machine.Pin.OUT,
                             value=pins.get("adc_ctrl_on", 0))

    def pulse_source(self, name, direction, debounce_ms):
        """IRQ pulse counting, with the pulse pin as the light-sleep wake-up source.

        In deep sleep the ULP counts instead (firmware.ulp_counter).
        """
        import esp32

        if self.sleep_mode == "deep":
            return self._ulp_counter(esp32)

        source = BoardHal.pulse_source(self, name, direction, debounce_ms)
        pin = self.pin(name)
        esp32.wake_on_ext0(pin, esp32.WAKEUP_ALL_LOW)
        self.wake_pin = pin
        return source

    def _ulp_counter(self, esp32):
        # ulp.bin: the ESP-IDF ULP binary (tools/ulp.image, written by
        # `knute provision`), the counter words first, the code from word
        # _ULP_ENTRY. Loaded at a power-on only: after a deep sleep the ULP has
        # been counting all along and its RTC memory holds the counts.
        machine = self.machine
        if machine.reset_cause() != machine.DEEPSLEEP_RESET:
            with open("ulp.bin", "rb") as handle:
                image = handle.read()
            ulp = esp32.ULP()
            ulp.set_wakeup_period(0, _ULP_PERIOD_US)
            ulp.load_binary(0, image)
            ulp.run(_ULP_ENTRY * 4)
        mem = machine.mem32
        # The ULP program itself switches the reed, direction and tamper pads to
        # the RTC domain (RTC_IO pad registers, ESP32 TRM "RTC IO_MUX"; tools/ulp.py
        # RTC_PADS) when this word is 0. Cleared at every boot, so whatever the
        # boot did to those pins, the ULP's next run (within 10 ms) sets them again.
        mem[_RTC_SLOW + 4 * _ULP_PADS] = 0

        def read():
            # RTC slow memory words 2 and 3 (tools/ulp.WORDS), low 16 bits
            return (mem[_RTC_SLOW + 8] & 0xFFFF, mem[_RTC_SLOW + 12] & 0xFFFF)

        from firmware.ulp_counter import UlpCounter

        return UlpCounter(read)

    def sleep_ms(self, ms):
        """Deep sleep (the CPU resets at the end) in power.sleep "deep", else as BoardHal."""
        if self.sleep_mode == "deep" and ms >= 1000:
            self.machine.deepsleep(ms)
        BoardHal.sleep_ms(self, ms)

    def _make_adc(self, number):
        adc = self.machine.ADC(self.machine.Pin(number))
        adc.atten(self.machine.ADC.ATTN_11DB)
        return adc

    def _read_uv(self, adc):
        return adc.read_uv()
