# The receiving side of protocol.frame (see there for the layout): verify,
# decrypt and check a frame against the kinds table. A node only encodes and
# never loads this module.

from . import cbor, ccm, kinds
from .frame import HEADER_LEN, nonce, parse_header


def open_payload(kind_id, plain):
    """Raw field values from a decrypted payload (CBOR checks, then the kinds table)."""
    return kinds.unpack(kinds.KINDS[kind_id], cbor.decode(plain))


def decode(buf, key, block=None):
    """Verify and decrypt a frame with the device's key.

    Returns a dict: kind (name), kind_id, device_id, fcnt, tag_len, values
    (raw field values by name). Raises FrameError for any failed check.
    """
    kind_id, device_id, fcnt, tag_len = parse_header(buf)
    if block is None:
        block = ccm.aes_block(key)
    plain = ccm.open_(block, nonce(device_id, fcnt), bytes(buf[:HEADER_LEN]),
                      bytes(buf[HEADER_LEN:]), tag_len)
    return decoded(kind_id, device_id, fcnt, tag_len, plain)


def decoded(kind_id, device_id, fcnt, tag_len, plain):
    """The dict decode() returns, from parsed header fields and the decrypted payload."""
    return {
        "kind": kinds.KINDS[kind_id]["name"],
        "kind_id": kind_id,
        "device_id": device_id,
        "fcnt": fcnt,
        "tag_len": tag_len,
        "values": open_payload(kind_id, plain),
    }
