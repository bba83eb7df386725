# The AES block function of protocol.ccm on CPython, from the `cryptography`
# package (MicroPython's cryptolib is used on a node; see protocol/ccm.py).
#
# cryptography is imported at the first key, not with this module: on CPython every
# import of protocol.downlink or protocol.frame loads protocol.ccm, and `knute devices`
# (command names and bounds from protocol.downlink) never encrypts.

from .errors import KEY_LENGTH, FrameError


def aes_block(key):
    """A function that encrypts one 16-byte block with AES-128 under `key`."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(key) != 16:
        raise FrameError(KEY_LENGTH)
    return Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor().update
