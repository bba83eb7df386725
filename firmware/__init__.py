# knute node firmware: runs unchanged on ESP32 and RP2040 boards and on the
# MicroPython unix port (the bench).
#
#   firmware.app         boot, safe mode, main loop, watchdog, sleep
#   firmware.config      load and validate config.json
#   firmware.context     what a role gets: config, HAL, send(), log(), state
#   firmware.state       atomic files, frame-counter reservation, flash-write count
#   firmware.link        UART/RS-485 link records and LoRa transmit
#   firmware.dutycycle   EU868 sub-band duty-cycle accounting
#   firmware.hal         one module per port (esp32, rp2, unix); the only `machine` user
#   firmware.boards      one pin-map file per supported board
#   firmware.roles       water_meter, air_quality, radio_bridge

VERSION = "0.1.0"
