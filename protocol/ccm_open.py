# The receiving half of protocol.ccm (AES-128-CCM, RFC 3610), kept apart so
# that a node, which only seals, does not carry it.

from .ccm import _check_params, _ctr, _mac
from .errors import FRAME_TAG, FrameError


def open_(block, nonce, aad, data, tag_len):
    """Check the tag and decrypt; FrameError(frame_tag) if it does not verify."""
    _check_params(nonce, tag_len)
    if len(data) < tag_len:
        raise FrameError(FRAME_TAG, "shorter than the tag")
    body_len = len(data) - tag_len
    plain = _ctr(block, nonce, data[:body_len], 1)
    expected = _mac(block, nonce, aad, plain, tag_len)
    s0 = _ctr(block, nonce, data[body_len:], 0)
    diff = 0
    for j in range(tag_len):
        diff |= s0[j] ^ expected[j]  # constant time over the tag
    if diff:
        raise FrameError(FRAME_TAG)
    return bytes(plain)
