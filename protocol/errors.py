# The one error type of the knute protocol. Every decode failure, whatever the
# input bytes, is a FrameError with a short reason code from the list below;
# the gateway counts rejected frames by these codes and docs/protocol.md
# explains each one.
#
# The reasons only a receiver meets (CBOR decoding, payload shape, link
# framing) are defined in protocol.errors_decode and appear here on first
# use (errors.CBOR_TRUNCATED works as any other): a node only encodes and
# never loads them.


class FrameError(ValueError):
    """A frame, payload or link record that fails a check; ``reason`` says which."""

    def __init__(self, reason, detail=None):
        super().__init__(reason + ": " + detail if detail else reason)
        self.reason = reason
        self.detail = detail


# Frame (protocol/frame.py)
FRAME_SHORT = "frame_short"              # shorter than a header, or header + 1 + tag
FRAME_LONG = "frame_long"                # longer than MAX_FRAME
FRAME_VERSION = "frame_version"          # unknown version in the control byte
FRAME_KIND = "frame_kind"                # kind id not in the kinds table
FRAME_TAG = "frame_tag"                  # authentication tag does not verify
FRAME_FCNT = "frame_fcnt"                # frame counter outside its range (encoder)
FRAME_DEVICE = "frame_device"            # device id outside its range (encoder)
KEY_LENGTH = "key_length"                # key is not 16 bytes

# Payload against the kinds table (protocol/kinds.py)
PAYLOAD_TYPE = "payload_type"            # a field has the wrong CBOR type
PAYLOAD_RANGE = "payload_range"          # a field is outside its declared range
PAYLOAD_MISSING = "payload_missing"      # a required field is absent
PAYLOAD_UNKNOWN = "payload_unknown"      # a field name not in the kind (encoder)


def __getattr__(name):
    # The receiver's reasons: see the top of this file.
    from . import errors_decode

    value = getattr(errors_decode, name)
    globals()[name] = value
    return value
