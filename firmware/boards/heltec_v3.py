# Heltec WiFi LoRa 32 V3 (ESP32-S3 + SX1262, 863-928 MHz).
# Radio wiring from the board schematic (SX1262 on SPI with a 1.8 V TCXO on DIO3).

PINS = {
    "lora": {"chip": "sx1262", "spi": 1, "sck": 9, "mosi": 10, "miso": 11, "cs": 8,
             "reset": 12, "busy": 13, "dio1": 14, "tcxo_mv": 1800},
    "link": (1, 43, 44),        # U0TXD/U0RXD header pins, or an RS-485 transceiver
    "pm": (2, 45, 46),
    "i2c0": (0, 41, 42),
    "pulse": 4,
    "direction": 5,
    "tamper": 6,
    "battery": 1,               # VBAT through 390k/100k, enabled by adc_ctrl
    "battery_divider": 4.9,
    "adc_ctrl": 37,
    "adc_ctrl_on": 0,           # V3.0: low enables the divider (V3.1 and later: 1)
    "vext": 36,
    "led": 35,
    "led_active": 1,
}
