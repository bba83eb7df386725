# Frame v1: an 8-byte header, an encrypted CBOR payload and a CCM tag.
#
#   offset  size  field
#   0       1     control: version (bits 7-6, value 1) | long tag (bit 5) | kind (bits 4-0)
#   1       4     device id, unsigned big-endian
#   5       3     frame counter, unsigned big-endian (0 .. 16,777,215)
#   8       n     payload: CBOR array of the kind's fields, AES-128-CCM encrypted
#   8+n     4|8   CCM tag (8 bytes when the long-tag bit is set)
#
# The header is the CCM associated data, so it is authenticated but readable:
# the gateway finds the key by device id before it decrypts. The nonce is
#   0x00 (direction: uplink) | device id (4) | frame counter (4, big-endian) | 4 zero bytes
# and never repeats under one device key because the counter never does.
#
# decode(), decoded() and open_payload() live in protocol.frame_decode,
# imported on first use of those names here: a node only encodes.

import struct

from . import cbor, ccm, kinds
from .errors import (
    FRAME_DEVICE,
    FRAME_FCNT,
    FRAME_LONG,
    FRAME_SHORT,
    FRAME_VERSION,
    FrameError,
)

VERSION = 1
HEADER_LEN = 8
MAX_FRAME = 255         # the LoRa PHY payload limit; nothing longer is a frame
MAX_FCNT = 0xFFFFFF
MAX_DEVICE_ID = 0xFFFFFFFF
DIR_UPLINK = 0


def control_byte(kind_id, tag_len):
    """The header's first byte for a kind id (1..31) and a tag length (4 or 8)."""
    if tag_len not in (4, 8):
        raise ValueError("tag length must be 4 or 8")
    if kind_id < 1 or kind_id > 31:
        raise ValueError("kind id must be 1..31")
    return (VERSION << 6) | (0x20 if tag_len == 8 else 0) | kind_id


def header(kind_id, device_id, fcnt, tag_len):
    """The 8 header bytes (also the CCM associated data)."""
    if device_id < 0 or device_id > MAX_DEVICE_ID:
        raise FrameError(FRAME_DEVICE, str(device_id))
    if fcnt < 0 or fcnt > MAX_FCNT:
        raise FrameError(FRAME_FCNT, str(fcnt))
    return struct.pack(">BIBH", control_byte(kind_id, tag_len), device_id,
                       fcnt >> 16, fcnt & 0xFFFF)


def parse_header(buf):
    """(kind_id, device_id, fcnt, tag_len) of a frame, checking version, kind and length.

    Needs no key: the gateway calls it to find the device before verifying.
    """
    # The order is docs/protocol.md section 8's: too long, shorter than a header,
    # version, then shorter than the tag this version's header announces, kind.
    n = len(buf)
    if n > MAX_FRAME:
        raise FrameError(FRAME_LONG)
    if n < HEADER_LEN:
        raise FrameError(FRAME_SHORT)
    ctrl = buf[0]
    if ctrl >> 6 != VERSION:
        raise FrameError(FRAME_VERSION, str(ctrl >> 6))
    tag_len = 8 if ctrl & 0x20 else 4
    # Smallest payload is one byte (an empty CBOR array), so a frame has at least this:
    if n < HEADER_LEN + 1 + tag_len:
        raise FrameError(FRAME_SHORT)
    kind_id = ctrl & 0x1F
    kinds.table_entry(kind_id)
    device_id, hi, lo = struct.unpack_from(">IBH", buf, 1)
    return kind_id, device_id, (hi << 16) | lo, tag_len


def nonce(device_id, fcnt, direction=DIR_UPLINK):
    """The 13-byte CCM nonce for a device's frame counter."""
    return struct.pack(">BIIxxxx", direction, device_id, fcnt)


def encode(kind_name, device_id, fcnt, values, key, tag_len=4, block=None):
    """An encrypted, authenticated frame for raw field values of a kind.

    `block` is an AES block function for `key` (ccm.aes_block(key)); pass one
    in to reuse it across frames, as a node does.
    """
    kid = kinds.kind_id(kind_name)
    plain = cbor.encode(kinds.pack_id(kid, values))
    hdr = header(kid, device_id, fcnt, tag_len)
    if HEADER_LEN + len(plain) + tag_len > MAX_FRAME:
        raise FrameError(FRAME_LONG)
    if block is None:
        block = ccm.aes_block(key)
    return hdr + ccm.seal(block, nonce(device_id, fcnt), hdr, plain, tag_len)


def __getattr__(name):
    # The receiving side: see the top of this file.
    from . import frame_decode

    value = getattr(frame_decode, name)
    globals()[name] = value
    return value
