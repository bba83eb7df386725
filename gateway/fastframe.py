"""The receiver's fast path: the same answers as ``protocol.frame.decode``, in C where it can.

``protocol/`` is pure Python that also runs on a node, and on CPython its CBOR
decoder and kinds-table checks cost about three times the AES-CCM decryption
itself. The gateway therefore answers the common case here and leaves every
other case to the protocol code:

- ``parse_header``: one dict look-up of the control byte (version 1, a kind in
  the table, either tag length) and one ``struct`` unpack. Anything else (a
  bad version, an unknown kind, a frame too short or too long) goes to
  ``protocol.frame.parse_header``, which raises the reason docs/protocol.md
  section 8 gives, in its order.
- ``open_payload``: a regular expression per kind, built from the kinds table,
  that matches exactly the payloads ``protocol.frame.open_payload`` accepts:
  the array of the kind's fields (trailing optional ones may be absent), each
  a shortest-form CBOR integer inside its field's range, null where the field
  is nullable, a series as an array of the allowed length. A match is decoded
  by cbor2's C decoder (for this subset CBOR has one reading, so the values
  are those of the pure decoder); anything that does not match is decoded by
  ``protocol.frame.open_payload``, which accepts it or raises its reason. So
  the fast path never accepts what the protocol rejects, and every rejection
  carries the protocol's own reason.

tests/gateway/test_fastframe.py pins both functions to the protocol ones with
hypothesis (random, mutated and authentic payloads).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from cbor2 import loads as loads  # the C decoder (cbor2 is in the gateway extra)

from knute.protocol import frame as pframe
from knute.protocol import kinds

_ANY = rb"[\x00-\xff]"
_NULL = rb"\xf6"
UNPACK_IDS = struct.Struct(">IBH").unpack_from   # device id, counter (high, low)
# protocol.frame.nonce(device_id, fcnt, direction) is NONCE.pack(direction, device_id, fcnt)
NONCE = struct.Struct(">BIIxxxx")


def _byte(value: int) -> bytes:
    return rb"\x%02x" % value


def _klass(lo: int, hi: int) -> bytes:
    return _byte(lo) if lo == hi else b"[" + _byte(lo) + b"-" + _byte(hi) + b"]"


def _big_endian(lo: int, hi: int, width: int) -> bytes:
    """A pattern for ``width``-byte big-endian numbers from ``lo`` to ``hi``."""
    if width == 0:
        return b""
    shift = 8 * (width - 1)
    rest = (1 << shift) - 1
    lo_top, lo_rest = lo >> shift, lo & rest
    hi_top, hi_rest = hi >> shift, hi & rest
    if lo_top == hi_top:
        return _byte(lo_top) + _big_endian(lo_rest, hi_rest, width - 1)
    parts = []
    first, last = lo_top, hi_top
    if lo_rest:
        parts.append(_byte(lo_top) + _big_endian(lo_rest, rest, width - 1))
        first += 1
    if hi_rest != rest:
        parts.append(_byte(hi_top) + _big_endian(0, hi_rest, width - 1))
        last -= 1
    if first <= last:
        tail = _ANY + (b"{%d}" % (width - 1) if width > 2 else b"") if width > 1 else b""
        parts.append(_klass(first, last) + tail)
    return b"(?:" + b"|".join(parts) + b")"


# (lowest, highest, additional information, bytes that follow) of each
# shortest-form argument length (RFC 8949 section 4.2.1)
_ARGUMENTS = ((0, 23, None, 0), (24, 0xFF, 24, 1), (0x100, 0xFFFF, 25, 2),
              (0x10000, 0xFFFFFFFF, 26, 4), (0x100000000, 0xFFFFFFFFFFFFFFFF, 27, 8))


def _head(major: int, lo: int, hi: int) -> bytes:
    """A pattern for the shortest-form heads of major type ``major`` with argument lo..hi."""
    parts = []
    for first, last, info, width in _ARGUMENTS:
        a, b = max(lo, first), min(hi, last)
        if a > b:
            continue
        if info is None:
            parts.append(_klass((major << 5) | a, (major << 5) | b))
        else:
            parts.append(_byte((major << 5) | info) + _big_endian(a, b, width))
    return b"(?:" + b"|".join(parts) + b")" if parts else b"(?!)"


def _integer(lo: int, hi: int) -> bytes:
    """A pattern for the shortest-form CBOR integers from ``lo`` to ``hi``."""
    parts = []
    if hi >= 0:
        parts.append(_head(0, max(lo, 0), hi))
    if lo < 0:
        parts.append(_head(1, -1 - min(hi, -1), -1 - lo))
    return b"(?:" + b"|".join(parts) + b")"


def _field(field: tuple[Any, ...]) -> bytes:
    """A pattern for one TABLE field's value, as ``kinds.unpack`` accepts it."""
    lo, hi = kinds.field_range(field)
    if field[1] == "series":
        item = _integer(lo, hi)
        pattern = b"(?:" + b"|".join(
            _head(4, n, n) + b"(?:" + item + b")" + b"{%d}" % n
            for n in range(field[7][0], field[7][1] + 1)) + b")"
    else:
        pattern = _integer(lo, hi)
    if field[8] & kinds.NULLABLE:
        pattern = b"(?:" + _NULL + b"|" + pattern + b")"
    return pattern


def payload_pattern(kind_id: int) -> re.Pattern[bytes]:
    """The compiled pattern of the payloads of kind ``kind_id`` the protocol accepts."""
    fields = kinds.table_entry(kind_id)[2]
    required = sum(1 for f in fields if not f[8] & kinds.OPTIONAL)
    arrays = [_head(4, n, n) + b"".join(_field(f) for f in fields[:n])
              for n in range(required, len(fields) + 1)]
    return re.compile(b"(?:" + b"|".join(arrays) + b")")


def _builder(kind_id: int, name: str, fields: tuple[str, ...]) -> Callable[..., Any]:
    """A function (device_id, fcnt, tag_len, payload) -> the dict ``decode`` returns,
    for payloads of exactly ``len(fields)`` elements.

    Written out as one dict display per payload length, because building the two
    dicts key by key (``dict(zip(...))``) costs a third of the AES-CCM decryption.
    The source holds only names from the kinds table, quoted with repr().
    """
    values = ", ".join(f"{field!r}: payload[{pos}]" for pos, field in enumerate(fields))
    source = (f"def build(device_id, fcnt, tag_len, payload):\n"
              f"    return {{'kind': {name!r}, 'kind_id': {kind_id!r}, "
              f"'device_id': device_id, 'fcnt': fcnt, 'tag_len': tag_len, "
              f"'values': {{{values}}}}}\n")
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<fastframe kind {kind_id}>", "exec"), namespace)
    build: Callable[..., Any] = namespace["build"]
    return build


class _Kind:
    """What the fast path needs of one kind: its pattern and a builder per payload length.

    Both are made on the kind's first payload, not at import: compiling the
    water meter's pattern alone costs more CPU than the rest of a gateway's
    start-up imports of this module, and a gateway (or a ``knute`` command
    importing the pipeline) that never sees a kind's frame never pays for it.
    Until then ``match`` is ``_first_match``, which puts the compiled pattern's
    ``fullmatch`` in its place, so the hot path calls ``kind.match`` as before.
    """

    __slots__ = ("build", "fields", "kind_id", "match", "name")

    def __init__(self, kind_id: int, name: str, fields: tuple[str, ...]) -> None:
        self.kind_id = kind_id
        self.name = name
        self.fields = fields
        self.match: Callable[[bytes], Any] = self._first_match
        # build[n] for a payload of n elements (n is one the pattern admits); set with match
        self.build: tuple[Callable[..., Any], ...] = ()

    def _first_match(self, plain: bytes) -> Any:
        """Compile the pattern and the builders, then match ``plain`` as ``match`` will."""
        self.build = tuple(_builder(self.kind_id, self.name, self.fields[:n])
                           for n in range(len(self.fields) + 1))
        self.match = payload_pattern(self.kind_id).fullmatch
        return self.match(plain)


KINDS: dict[int, _Kind] = {
    entry[0]: _Kind(entry[0], entry[1], tuple(f[0] for f in entry[2])) for entry in kinds.TABLE}

# control byte -> (kind id, tag length, shortest frame): version 1, a known kind
CONTROL: dict[int, tuple[int, int, int]] = {
    (pframe.VERSION << 6) | (0x20 if tag_len == 8 else 0) | kind_id:
        (kind_id, tag_len, pframe.HEADER_LEN + 1 + tag_len)
    for kind_id in KINDS for tag_len in (4, 8)}


def parse_header(buf: bytes) -> tuple[int, int, int, int]:
    """(kind_id, device_id, fcnt, tag_len): ``protocol.frame.parse_header``'s answer."""
    n = len(buf)
    control = CONTROL.get(buf[0]) if pframe.HEADER_LEN <= n <= pframe.MAX_FRAME else None
    if control is None or n < control[2]:
        result: tuple[int, int, int, int] = pframe.parse_header(buf)
        return result
    device_id, hi, lo = UNPACK_IDS(buf, 1)
    return control[0], device_id, (hi << 16) | lo, control[1]


def open_payload(kind_id: int, plain: bytes) -> dict[str, Any]:
    """``protocol.frame.open_payload``'s answer: the raw field values, or its FrameError."""
    values: dict[str, Any] = decoded(kind_id, 0, 0, 4, plain)["values"]
    return values


def decoded(kind_id: int, device_id: int, fcnt: int, tag_len: int,
            plain: bytes) -> dict[str, Any]:
    """``protocol.frame.decoded``'s dict, or its FrameError.

    gateway.pipeline.Verifier.verify has these lines written out (one call less per frame).
    """
    kind = KINDS.get(kind_id)
    if kind is not None and kind.match(plain) is not None:
        payload = loads(plain)
        fast: dict[str, Any] = kind.build[len(payload)](device_id, fcnt, tag_len, payload)
        return fast
    slow: dict[str, Any] = pframe.decoded(kind_id, device_id, fcnt, tag_len, plain)
    return slow
