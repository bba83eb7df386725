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

import binascii
import struct

from protocol.errors import (
    LINK_COBS,
    LINK_CRC,
    LINK_OVERSIZE,
    LINK_RADIO,
    LINK_SHORT,
    LINK_TYPE,
    FrameError,
)

REC_FRAME = 1
REC_RADIO = 2
REC_LOG = 3
RECORD_TYPES = (REC_FRAME, REC_RADIO, REC_LOG)

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


def cobs_decode(data):
    """Undo cobs_encode; FrameError(link_cobs) for a block that is not valid COBS."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError(LINK_COBS, "zero byte inside a record")
        end = i + code
        if end > n:
            raise FrameError(LINK_COBS, "block runs past the end")
        for j in range(i + 1, end):
            if data[j] == 0:
                raise FrameError(LINK_COBS, "zero byte inside a record")
        out.extend(data[i + 1:end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_record(rtype, body):
    """One delimited link record of type `rtype` carrying `body`."""
    if len(body) > MAX_BODY:
        raise ValueError("record body longer than MAX_BODY")
    raw = bytes((rtype,)) + bytes(body)
    crc = binascii.crc32(raw) & 0xFFFFFFFF
    return b"\x00" + cobs_encode(raw + struct.pack("<I", crc)) + b"\x00"


def decode_record(encoded):
    """(type, body) of one record without its delimiters; FrameError on any fault."""
    raw = cobs_decode(encoded)
    if len(raw) < 5:
        raise FrameError(LINK_SHORT)
    crc = struct.unpack_from("<I", raw, len(raw) - 4)[0]
    if binascii.crc32(raw[:-4]) & 0xFFFFFFFF != crc:
        raise FrameError(LINK_CRC)
    rtype = raw[0]
    if rtype not in RECORD_TYPES:
        raise FrameError(LINK_TYPE, str(rtype))
    return rtype, raw[1:-4]


def pack_radio(rssi_dbm, snr_db_x10, freq_hz, sf, frame):
    """The body of a RADIO record: reception metadata followed by the frame."""
    return struct.pack(_RADIO, rssi_dbm, snr_db_x10, freq_hz, sf) + bytes(frame)


def unpack_radio(body):
    """(metadata dict, frame bytes) of a RADIO record body."""
    if len(body) < RADIO_META_LEN:
        raise FrameError(LINK_RADIO)
    rssi, snr, freq, sf = struct.unpack_from(_RADIO, body, 0)
    meta = {"rssi_dbm": rssi, "snr_db": snr / 10, "freq_hz": freq, "sf": sf}
    return meta, body[RADIO_META_LEN:]


class StreamDecoder:
    """Splits a byte stream into link records, resynchronising after faults.

    feed() returns, in arrival order, a (type, body) tuple for each good record
    and a FrameError for each bad one; a bad record never hides the next good
    one. Empty records (two delimiters in a row) are ignored, which is what makes
    the leading 0x00 of every record free for the receiver.
    """

    def __init__(self, max_encoded=MAX_ENCODED):
        self.max_encoded = max_encoded
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data):
        """Consume `data` (bytes); return the records and errors completed by it."""
        results = []
        start = 0
        n = len(data)
        while start < n:
            zero = data.find(b"\x00", start) if isinstance(data, bytes) else bytes(
                data).find(b"\x00", start)
            end = n if zero < 0 else zero
            if not self._discarding:
                self._buf.extend(data[start:end])
                if len(self._buf) > self.max_encoded:
                    results.append(FrameError(LINK_OVERSIZE))
                    self._buf = bytearray()
                    self._discarding = True
            if zero < 0:
                break
            if self._discarding:
                self._discarding = False
            elif self._buf:
                try:
                    results.append(decode_record(bytes(self._buf)))
                except FrameError as err:
                    results.append(err)
                self._buf = bytearray()
            start = zero + 1
        return results

    def pending(self):
        """Bytes held for a record whose delimiter has not arrived yet."""
        return len(self._buf)
