# The water-meter board: an ESP32 module and an SX1276 on a 3.6 V lithium cell
# through a nano-power LDO, no USB bridge (tools/power.py "meter_esp32"). It is
# the board of the deep-sleep design (power.sleep "deep", docs/firmware.md
# "Power"): the reed, direction and tamper inputs sit on RTC GPIOs, which the
# ULP coprocessor reads while the CPU sleeps. ESP32 datasheet, "Pin
# Definitions", RTC function column: GPIO32 = RTC_GPIO9, GPIO33 = RTC_GPIO8,
# GPIO25 = RTC_GPIO6 (tools/ulp.RTC_GPIO has the whole list). GPIO 32, 33 and
# 25 have RTC pull-ups; GPIO 34 ... 39 (input only, no pull-ups) and the
# strapping pins 0, 2, 12 and 15 are left out.

PINS = {
    "lora": {"chip": "sx1276", "spi": 1, "sck": 5, "mosi": 27, "miso": 19, "cs": 18,
             "reset": 14, "dio0": 26, "dio1": 35},
    "pulse": 32,                # reed contact to GND, RTC_GPIO9
    "direction": 33,            # high: forward flow, RTC_GPIO8
    "tamper": 25,               # cover switch / magnet sensor, RTC_GPIO6
    "battery": 36,              # cell through 1M/1M (ADC1_CH0, RTC_GPIO0)
    "battery_divider": 2.0,
    "led": 22,
    "led_active": 1,
}
