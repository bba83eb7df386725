# AES-128-CCM (RFC 3610) composed from a bare AES block function, so that it
# runs where only AES-ECB exists: MicroPython's cryptolib has ECB and CBC on
# most ports but no CTR, CCM or CMAC. On CPython the block function comes
# from the `cryptography` package; the gateway's hot path uses cryptography's
# AESCCM instead, and tests check that both give the same bytes.
#
# Parameters used by knute (RFC 3610 section 2): nonce 13 bytes, so the length
# field L is 2 octets and a message is at most 65535 bytes; tag M is 4 or 8.
# Associated data may be of any length below 2^32 octets (both length forms of
# section 2.2), although a frame only ever has its 8 header bytes.
#
# A node only seals. open_() lives in protocol.ccm_open, imported on first use
# of ccm.open_, and the CPython block function in protocol.ccm_host: every
# name a module holds is interned in a node's RAM for good, loaded or not.

from .errors import KEY_LENGTH, FrameError

try:
    import cryptolib  # MicroPython

    def aes_block(key):
        """A function that encrypts one 16-byte block with AES-128 under `key`."""
        if len(key) != 16:
            raise FrameError(KEY_LENGTH)
        return cryptolib.aes(bytes(key), 1).encrypt  # mode 1: ECB

except ImportError:  # CPython
    from .ccm_host import aes_block  # noqa: F401 (this module's aes_block)


NONCE_LEN = 13
_L = 15 - NONCE_LEN  # octets of the message length field


def _mac(block, nonce, aad, msg, tag_len):
    # CBC-MAC over B0 | encoded AAD | message, each part zero-padded (section 2.2).
    flags = (0x40 if aad else 0) | (((tag_len - 2) // 2) << 3) | (_L - 1)
    x = bytearray(16)
    x[0] = flags
    x[1:1 + NONCE_LEN] = nonce
    x[14] = (len(msg) >> 8) & 0xFF
    x[15] = len(msg) & 0xFF
    x = bytearray(block(bytes(x)))
    parts = (_aad_length(len(aad)) + bytes(aad), msg) if aad else (msg,)
    for part in parts:
        end = len(part)
        for start in range(0, end, 16):
            for j in range(min(16, end - start)):
                x[j] ^= part[start + j]
            x = bytearray(block(bytes(x)))
    return x


def _aad_length(n):
    # The encoding of l(a) that precedes the associated data (section 2.2): two
    # octets below 2^16 - 2^8, else 0xff 0xfe and four octets. (The 0xff 0xff
    # form for 2^32 octets and more is refused: no frame comes near it.)
    if n < 0xFF00:
        return bytes((n >> 8, n & 0xFF))
    if n > 0xFFFFFFFF:
        raise ValueError("CCM associated data of 2^32 bytes or more")
    return b"\xff\xfe" + bytes((n >> 24, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))


def _ctr(block, nonce, data, first_counter):
    # Key stream blocks A_i = flags | nonce | i encrypted (section 2.3) XORed onto data.
    out = bytearray(data)
    a = bytearray(16)
    a[0] = _L - 1
    a[1:1 + NONCE_LEN] = nonce
    counter = first_counter
    for start in range(0, len(out), 16):
        a[14] = (counter >> 8) & 0xFF
        a[15] = counter & 0xFF
        s = block(bytes(a))
        for j in range(min(16, len(out) - start)):
            out[start + j] ^= s[j]
        counter += 1
    return out


def _check_params(nonce, tag_len):
    if len(nonce) != NONCE_LEN:
        raise ValueError("CCM nonce must be 13 bytes")
    if tag_len not in (4, 6, 8, 10, 12, 14, 16):
        raise ValueError("CCM tag length must be even, 4..16")


def seal(block, nonce, aad, plaintext, tag_len):
    """Encrypt and authenticate: ciphertext followed by a `tag_len`-byte tag."""
    _check_params(nonce, tag_len)
    if len(plaintext) > 0xFFFF:
        raise ValueError("CCM message longer than 65535 bytes")
    tag = _mac(block, nonce, aad, plaintext, tag_len)
    cipher = _ctr(block, nonce, plaintext, 1)
    s0 = _ctr(block, nonce, bytes(tag_len), 0)
    for j in range(tag_len):
        s0[j] ^= tag[j]
    return bytes(cipher) + bytes(s0)


def __getattr__(name):
    # open_: see the top of this file.
    from . import ccm_open

    value = getattr(ccm_open, name)
    globals()[name] = value
    return value
