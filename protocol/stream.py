# Link framing for UART and RS-485: each record is
#
#   0x00 | COBS( type (1 byte) | body | CRC-32 of type+body (4 bytes, little-endian) ) | 0x00
#
# COBS (Cheshire and Baker, "Consistent Overhead Byte Stuffing", 1999) removes
# every zero byte, so 0x00 only ever marks the end of a record and a receiver
# that starts mid-stream, or loses bytes to line noise, is back in step at the
# next zero. The leading 0x00 ends whatever noise came before the record, so
# the record itself is never lost to it. CRC-32 is the one binascii.crc32
# computes (IEEE 802.3, as in zlib).
#
# Record types:
#   0x01 FRAME  body = one knute frame
#   0x02 RADIO  body = rssi_dbm (int16) | snr_db_x10 (int16) | freq_hz (uint32)
#                      | sf (uint8), all big-endian, then one knute frame;
#                sent by a radio-bridge node for each LoRa packet it hears
#   0x03 LOG    body = UTF-8 text of a node's console line (diagnostics)
#   0x04 TX     body = at_ms (uint64) | freq_hz (uint32) | sf (uint8), all
#                      big-endian, then one downlink: sent by the gateway to a
#                      radio-bridge node, "transmit this at at_ms of your clock"
#                      (0: in the addressed device's next receive window)
#
# The receiving side (cobs_decode, decode_record, unpack_radio, StreamDecoder)
# lives in protocol.stream_decode, imported on first use of those names here:
# a node only sends records and never loads it.

import binascii
import struct

REC_FRAME = 1
REC_RADIO = 2
REC_LOG = 3
# REC_TX, RECORD_TYPES and the TX body (pack_tx, unpack_tx) are the gateway's
# and the radio bridge's: protocol.stream_decode, so a sending node never
# carries their code and names (every name a node loads stays in its heap).

MAX_BODY = 300          # longest body: a 255-byte frame plus radio metadata, with room
MAX_ENCODED = MAX_BODY + 5 + (MAX_BODY + 5) // 254 + 2  # COBS of type+body+CRC, + delimiter
_RADIO = ">hhIB"
RADIO_META_LEN = 9


def cobs_encode(data):
    """COBS-encode `data` (no delimiter appended)."""
    out = bytearray()
    code_pos = 0
    out.append(0)
    code = 1
    for byte in data:
        if byte == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
        else:
            out.append(byte)
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                code_pos = len(out)
                out.append(0)
                code = 1
    out[code_pos] = code
    return bytes(out)


def encode_record(rtype, body):
    """One delimited link record of type `rtype` carrying `body`."""
    if len(body) > MAX_BODY:
        raise ValueError("record body longer than MAX_BODY")
    raw = bytes((rtype,)) + bytes(body)
    crc = binascii.crc32(raw) & 0xFFFFFFFF
    return b"\x00" + cobs_encode(raw + struct.pack("<I", crc)) + b"\x00"


def pack_radio(rssi_dbm, snr_db_x10, freq_hz, sf, frame):
    """The body of a RADIO record: reception metadata followed by the frame."""
    return struct.pack(_RADIO, rssi_dbm, snr_db_x10, freq_hz, sf) + bytes(frame)


def __getattr__(name):
    # The receiving side: see the top of this file.
    from . import stream_decode

    value = getattr(stream_decode, name)
    globals()[name] = value
    return value
