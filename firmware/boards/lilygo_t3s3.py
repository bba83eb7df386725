# LilyGO T3-S3 V1.2 with the SX1262 radio (ESP32-S3, 868 MHz).

PINS = {
    "lora": {"chip": "sx1262", "spi": 1, "sck": 5, "mosi": 6, "miso": 3, "cs": 7,
             "reset": 8, "busy": 34, "dio1": 33, "tcxo_mv": 1800},
    "link": (1, 43, 44),
    "pm": (2, 15, 16),
    "i2c0": (0, 17, 18),
    "pulse": 10,
    "direction": 11,
    "tamper": 12,
    "battery": 1,               # VBAT through 100k/100k
    "battery_divider": 2.0,
    "led": 37,
    "led_active": 1,
}
