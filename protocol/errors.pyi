class FrameError(ValueError):
    reason: str
    detail: str | None
    def __init__(self, reason: str, detail: str | None = ...) -> None: ...

CBOR_TRUNCATED: str
CBOR_TRAILING: str
CBOR_UNSUPPORTED: str
CBOR_INDEFINITE: str
CBOR_NON_SHORTEST: str
CBOR_MAP_KEY: str
CBOR_TOO_DEEP: str
CBOR_TOO_LONG: str
CBOR_BAD_TEXT: str
FRAME_SHORT: str
FRAME_LONG: str
FRAME_VERSION: str
FRAME_KIND: str
FRAME_TAG: str
FRAME_FCNT: str
FRAME_DEVICE: str
KEY_LENGTH: str
PAYLOAD_SHAPE: str
PAYLOAD_TYPE: str
PAYLOAD_RANGE: str
PAYLOAD_MISSING: str
PAYLOAD_UNKNOWN: str
LINK_COBS: str
LINK_CRC: str
LINK_SHORT: str
LINK_OVERSIZE: str
LINK_TYPE: str
LINK_RADIO: str
