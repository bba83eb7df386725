# Heltec WiFi LoRa 32 V2 (ESP32 + SX1276, 868/915 MHz).

PINS = {
    "lora": {"chip": "sx1276", "spi": 1, "sck": 5, "mosi": 27, "miso": 19, "cs": 18,
             "reset": 14, "dio0": 26, "dio1": 35},
    "link": (1, 17, 16),
    "pm": (2, 12, 13),
    "i2c0": (0, 15, 4),
    "pulse": 32,
    "direction": 33,
    "tamper": 23,
    "battery": 37,              # VBAT through 220k/100k
    "battery_divider": 3.2,
    "vext": 21,
    "led": 25,
    "led_active": 1,
}
