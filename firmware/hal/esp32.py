# ESP32 / ESP32-S3 boards (Heltec WiFi LoRa 32, LilyGO T3, ...).
#
# Differences from the shared board HAL:
#   - light sleep is woken by the pulse pin (ext0 wake-up on its low level,
#     so it must be an RTC GPIO, as in every ESP32 pin map here): the board
#     wakes at the start of each pulse, the IRQ counts it at once, and flow
#     windows stay exact while the node sleeps between pulses;
#   - the ADC is calibrated by the IDF: ADC.read_uv() gives microvolts;
#   - the RNG is the hardware one (random is seeded from os.urandom at boot).

from firmware.hal.board import BoardHal


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
        """IRQ pulse counting, with the pulse pin as the light-sleep wake-up source."""
        import esp32

        source = BoardHal.pulse_source(self, name, direction, debounce_ms)
        pin = self.pin(name)
        esp32.wake_on_ext0(pin, esp32.WAKEUP_ALL_LOW)
        self.wake_pin = pin
        return source

    def _make_adc(self, number):
        adc = self.machine.ADC(self.machine.Pin(number))
        adc.atten(self.machine.ADC.ATTN_11DB)
        return adc

    def _read_uv(self, adc):
        return adc.read_uv()
