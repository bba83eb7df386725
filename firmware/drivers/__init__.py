# Sensor drivers. Each takes its bus object in the constructor and never
# imports `machine`, so the same code runs on a board, on the unix port and on
# CPython against dummy buses:
#
#   uart  object with read(n) -> bytes|None, write(buf), any() -> int
#         (machine.UART, a pty wrapper on the unix port, a test double)
#   i2c   object with readfrom_mem(addr, reg, n) -> bytes and
#         writeto_mem(addr, reg, buf); readfrom_mem_into(addr, reg, buf) is
#         used when present (machine.I2C has it) so reads do not allocate
#
#   drivers.sds011    Nova Fitness SDS011 particle sensor (UART, 10-byte frames)
#   drivers.pms5003   Plantower PMS5003 particle sensor (UART, 32-byte frames)
#   drivers.bme280    Bosch BME280 temperature/humidity/pressure (I2C)
#   drivers.regimage  register-image file served as an I2C bus (bench, tests)
#   drivers.regimage_edit  the same with dump/get/put/scan for tests and tools
#                     (a node never loads it)
#   drivers.uartframe the frame reader both particle sensors share
