# LilyGO T3 V1.6.1 (ESP32 + SX1276, 868 MHz).

PINS = {
    "lora": {"chip": "sx1276", "spi": 1, "sck": 5, "mosi": 27, "miso": 19, "cs": 18,
             "reset": 23, "dio0": 26, "dio1": 33},
    "link": (1, 4, 0),
    "pm": (2, 12, 13),
    "i2c0": (0, 22, 21),
    "pulse": 34,                # input-only GPIO: fit an external pull-up (10 kOhm)
    "direction": 39,
    "tamper": 14,
    "battery": 35,              # VBAT through 100k/100k
    "battery_divider": 2.0,
    "led": 25,
    "led_active": 1,
}
