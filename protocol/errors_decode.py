# The FrameError reasons only a receiver meets (see protocol.errors, which
# offers them under the same names). Each is the name in lower case.

# CBOR subset (protocol/cbor_decode.py)
CBOR_TRUNCATED = "cbor_truncated"        # an item runs past the end of the buffer
CBOR_TRAILING = "cbor_trailing"          # bytes left after the top-level item
CBOR_UNSUPPORTED = "cbor_unsupported"    # tags, floats, undefined, simple values
CBOR_INDEFINITE = "cbor_indefinite"      # indefinite-length item
CBOR_NON_SHORTEST = "cbor_non_shortest"  # integer or length not in its shortest form
CBOR_MAP_KEY = "cbor_map_key"            # map key not an integer, unsorted or duplicated
CBOR_TOO_DEEP = "cbor_too_deep"          # nesting deeper than MAX_DEPTH
CBOR_TOO_LONG = "cbor_too_long"          # a length larger than the frame limit
CBOR_BAD_TEXT = "cbor_bad_text"          # text string that is not UTF-8

# Payload against the kinds table (protocol/kinds_decode.py)
PAYLOAD_SHAPE = "payload_shape"          # payload is not an array of the kind's fields

# Link framing (protocol/stream_decode.py)
LINK_COBS = "link_cobs"                  # COBS block points past the end or holds a zero
LINK_CRC = "link_crc"                    # CRC-32 does not match
LINK_SHORT = "link_short"                # record shorter than type + CRC
LINK_OVERSIZE = "link_oversize"          # more bytes than MAX_RECORD before a delimiter
LINK_TYPE = "link_type"                  # unknown record type
LINK_RADIO = "link_radio"                # radio record too short for its metadata
