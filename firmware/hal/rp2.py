# RP2040 boards (Raspberry Pi Pico / Pico W with an SX1262 module).
#
# Differences from the shared board HAL:
#   - machine.lightsleep() on rp2 is woken only by timers and a few sources,
#     not reliably by a GPIO IRQ, so a water meter on a Pico uses
#     power.sleep "idle" (time.sleep_ms; IRQs are served at once);
#     "light" is accepted and treated as "idle" here;
#   - the ADC is 12 bits scaled to 16 (read_u16) against the 3.3 V reference;
#   - VSYS is measured on GPIO29 (ADC3) through the on-board 3:1 divider.

from firmware.hal.board import BoardHal


class Hal(BoardHal):
    """RP2040 HAL."""

    port = "rp2"

    def configure(self, config):
        """Pin map; light sleep becomes idle (see above); RNG seed from the ROSC."""
        BoardHal.configure(self, config)
        if self.sleep_mode == "light":
            self.sleep_mode = "idle"
        import os
        import random

        random.seed(int.from_bytes(os.urandom(4), "big"))

    def _read_uv(self, adc):
        return adc.read_u16() * 3300000 // 65535
