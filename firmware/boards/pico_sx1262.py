# Raspberry Pi Pico (RP2040) with the Waveshare Pico-LoRa-SX1262-868M module.

PINS = {
    "lora": {"chip": "sx1262", "spi": 1, "sck": 10, "mosi": 11, "miso": 12, "cs": 3,
             "reset": 15, "busy": 2, "dio1": 20},
    "link": (0, 0, 1),          # UART0 on GP0/GP1
    "pm": (1, 4, 5),            # UART1 on GP4/GP5
    "i2c0": (0, 17, 16),        # I2C0 SCL GP17, SDA GP16
    "pulse": 6,
    "direction": 7,
    "tamper": 8,
    "battery": 29,              # VSYS/3 on ADC3
    "battery_divider": 3.0,
    "led": 25,
    "led_active": 1,
}
