# One pin-map file per supported board: a module defining PINS.
#
# Keys used by the firmware:
#   "lora"            dict: chip, spi, sck, mosi, miso, cs, reset, and busy/dio1 (SX126x)
#                     or dio0/dio1 (SX127x), tcxo_mv (SX126x boards with a TCXO on DIO3)
#   "link"            (uart id, tx, rx) of the wired link (RS-485 transceiver or USB-UART)
#   "pm"              (uart id, tx, rx) of the particulate sensor
#   "i2c0"            (i2c id, scl, sda) for the BME280
#   "pulse", "direction", "tamper"   GPIO numbers of the meter inputs
#   "battery"         ADC GPIO; "battery_divider" the cell/ADC voltage ratio
#   "led", "led_active"              user LED and its active level
#   "vext", "adc_ctrl", "adc_ctrl_on"  board power switches (Heltec)
# Config names (water.pulse, air.pm_uart, ...) refer to these keys.
