# knute wire protocol: runs unchanged on MicroPython and CPython.
#
#   protocol.cbor    deterministic CBOR subset codec
#   protocol.ccm     AES-128-CCM from an AES block function
#   protocol.kinds   the sensor kinds table
#   protocol.frame   frame v1: header, payload, encryption
#   protocol.stream  COBS + CRC-32 link framing for UART/RS-485
#   protocol.errors  FrameError and its reason codes

PROTOCOL_VERSION = 1
