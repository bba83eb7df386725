# The one error type of the knute protocol. Every decode failure, whatever the
# input bytes, is a FrameError with a short reason code from the list below;
# the gateway counts rejected frames by these codes and docs/protocol.md
# explains each one.


class FrameError(ValueError):
    """A frame, payload or link record that fails a check; ``reason`` says which."""

    def __init__(self, reason, detail=None):
        super().__init__(reason + ": " + detail if detail else reason)
        self.reason = reason
        self.detail = detail


# CBOR subset (protocol/cbor.py)
CBOR_TRUNCATED = "cbor_truncated"        # an item runs past the end of the buffer
CBOR_TRAILING = "cbor_trailing"          # bytes left after the top-level item
CBOR_UNSUPPORTED = "cbor_unsupported"    # tags, floats, undefined, simple values
CBOR_INDEFINITE = "cbor_indefinite"      # indefinite-length item
CBOR_NON_SHORTEST = "cbor_non_shortest"  # integer or length not in its shortest form
CBOR_MAP_KEY = "cbor_map_key"            # map key not an integer, unsorted or duplicated
CBOR_TOO_DEEP = "cbor_too_deep"          # nesting deeper than MAX_DEPTH
CBOR_TOO_LONG = "cbor_too_long"          # a length larger than the frame limit
CBOR_BAD_TEXT = "cbor_bad_text"          # text string that is not UTF-8

# Frame (protocol/frame.py)
FRAME_SHORT = "frame_short"              # shorter than header + tag
FRAME_LONG = "frame_long"                # longer than MAX_FRAME
FRAME_VERSION = "frame_version"          # unknown version in the control byte
FRAME_KIND = "frame_kind"                # kind id not in the kinds table
FRAME_TAG = "frame_tag"                  # authentication tag does not verify
FRAME_FCNT = "frame_fcnt"                # frame counter outside its range (encoder)
FRAME_DEVICE = "frame_device"            # device id outside its range (encoder)
KEY_LENGTH = "key_length"                # key is not 16 bytes

# Payload against the kinds table (protocol/kinds.py)
PAYLOAD_SHAPE = "payload_shape"          # payload is not an array of the kind's fields
PAYLOAD_TYPE = "payload_type"            # a field has the wrong CBOR type
PAYLOAD_RANGE = "payload_range"          # a field is outside its declared range
PAYLOAD_MISSING = "payload_missing"      # a required field is absent
PAYLOAD_UNKNOWN = "payload_unknown"      # a field name not in the kind (encoder)

# Link framing (protocol/stream.py)
LINK_COBS = "link_cobs"                  # COBS block points past the end or holds a zero
LINK_CRC = "link_crc"                    # CRC-32 does not match
LINK_SHORT = "link_short"                # record shorter than type + CRC
LINK_OVERSIZE = "link_oversize"          # more bytes than MAX_RECORD before a delimiter
LINK_TYPE = "link_type"                  # unknown record type
LINK_RADIO = "link_radio"                # radio record too short for its metadata
