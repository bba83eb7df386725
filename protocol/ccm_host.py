# The AES block function of protocol.ccm on CPython, from the `cryptography`
# package (MicroPython's cryptolib is used on a node; see protocol/ccm.py).

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import KEY_LENGTH, FrameError


def aes_block(key):
    """A function that encrypts one 16-byte block with AES-128 under `key`."""
    if len(key) != 16:
        raise FrameError(KEY_LENGTH)
    return Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor().update
