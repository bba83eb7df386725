# The receiving side of protocol.stream (see there for the record layout):
# COBS decoding, record checks and the resynchronising stream splitter. A
# node only sends records and never loads this module.

import binascii
import struct

from .errors import (
    LINK_COBS,
    LINK_CRC,
    LINK_OVERSIZE,
    LINK_RADIO,
    LINK_SHORT,
    LINK_TYPE,
    FrameError,
)
from .stream import _RADIO, MAX_ENCODED, RADIO_META_LEN, REC_FRAME, REC_LOG, REC_RADIO

REC_TX = 4
RECORD_TYPES = (REC_FRAME, REC_RADIO, REC_LOG, REC_TX)
_TX = ">QIB"
TX_META_LEN = 13


def pack_tx(at_ms, freq_hz, sf, payload):
    """The body of a TX record: when (ms of the bridge's clock, 0 = its window) and how."""
    return struct.pack(_TX, at_ms, freq_hz, sf) + bytes(payload)


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


def unpack_radio(body):
    """(metadata dict, frame bytes) of a RADIO record body."""
    if len(body) < RADIO_META_LEN:
        raise FrameError(LINK_RADIO)
    rssi, snr, freq, sf = struct.unpack_from(_RADIO, body, 0)
    meta = {"rssi_dbm": rssi, "snr_db": snr / 10, "freq_hz": freq, "sf": sf}
    return meta, body[RADIO_META_LEN:]


def unpack_tx(body):
    """(at_ms, freq_hz, sf, downlink bytes) of a TX record body; FrameError(link_radio)."""
    if len(body) < TX_META_LEN:
        raise FrameError(LINK_RADIO, "tx")
    at_ms, freq, sf = struct.unpack_from(_TX, body, 0)
    return at_ms, freq, sf, bytes(body[TX_META_LEN:])


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
