"""The receiver's fast path: the same answers as ``protocol.frame.decode``, generated per kind.

``protocol/`` is pure Python that also runs on a node, and on CPython its CBOR
decoder and kinds-table checks cost about three times the AES-CCM decryption
itself. The gateway therefore answers the common case here and leaves every
other case to the protocol code:

- ``parse_header``: one dict look-up of the control byte (version 1, a kind in
  the table, either tag length) and one ``struct`` unpack. Anything else (a
  bad version, an unknown kind, a frame too short or too long) goes to
  ``protocol.frame.parse_header``, which raises the reason docs/protocol.md
  section 8 gives, in its order.
- ``open_payload`` and ``decoded``: one function per kind, generated once from
  the kinds table, that walks the payload bytes and accepts exactly the
  payloads ``protocol.frame.open_payload`` accepts: the array of the kind's
  fields (trailing optional ones may be absent), each a shortest-form CBOR
  integer inside its field's range, null where the field is nullable, a
  series as an array of the allowed length. Each field's code holds only the
  heads its range can take, with the range and shortest-form bounds written
  in as constants, and the function builds the result dict as it goes (one
  dict display per payload length). It returns None for anything else, which
  ``protocol.frame.open_payload`` then accepts or rejects with its reason. So
  the fast path never accepts what the protocol rejects, and every rejection
  carries the protocol's own reason.

The walk replaced a regular expression per kind (the check) followed by
cbor2's decoder and a dict builder: three passes over the same bytes where one
does (docs/performance.md has the figures).

The same walk also exists compiled (gateway/_fastframe.c, an optional extension;
gateway/fastwalk.py finds it): ``_fastframe.Decoder`` takes a compact spec of a
kind (``decoder_spec``: field names, ranges, nullable, optional, series lengths,
all from the kinds table) and answers as the generated decoder does, in about a
third of its time. Where it is built, ``_Kind.decode`` is the compiled decoder
and ``FAST_PATH`` is "c"; the generated one stays as ``decode_python``, and is
the only one where no compiler built the extension.

tests/gateway/test_fastframe.py pins every function here, and both walks, to the
protocol's with hypothesis (random, mutated and authentic payloads);
tests/gateway/test_fastframe_ext.py feeds the compiled walk hostile bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from knute.gateway import fastwalk
from knute.protocol import frame as pframe
from knute.protocol import kinds

UNPACK_IDS = struct.Struct(">IBH").unpack_from   # device id, counter (high, low)
# protocol.frame.nonce(device_id, fcnt, direction) is NONCE.pack(direction, device_id, fcnt)
NONCE = struct.Struct(">BIIxxxx")

# (lowest, highest, additional information, bytes that follow) of each
# shortest-form argument length (RFC 8949 section 4.2.1); None: the value is in the head
_ARGUMENTS: tuple[tuple[int, int, int | None, int], ...] = (
    (0, 23, None, 0), (24, 0xFF, 24, 1), (0x100, 0xFFFF, 25, 2),
    (0x10000, 0xFFFFFFFF, 26, 4), (0x100000000, 0xFFFFFFFFFFFFFFFF, 27, 8))
_NULL = 0xF6
_ARRAY = 0x80            # major type 4: an array, its length in the head up to 23
_ARRAY_1 = 0x98          # an array whose length (24..255) is in the next byte
_UNROLL = 32             # longest series read element by element without a loop

Decoder = Callable[[bytes, int, int, int], dict[str, Any] | None]


def _argument(at: str, width: int) -> str:
    """The expression of the ``width``-byte big-endian argument after the head at ``at``."""
    if width == 1:
        return f"p[{at} + 1]"
    if width == 2:
        return f"p[{at} + 1] << 8 | p[{at} + 2]"
    return f"_U{8 * width}(p, {at} + 1)[0]"


def _integer(var: str, lo: int, hi: int, nullable: bool, pad: str) -> list[str]:
    """Lines that read one shortest-form integer in lo..hi (or null) at ``p[i]`` into
    ``var`` and step ``i`` past it, or return None.

    A branch per head the range can take: ``kinds.check``'s range and RFC 8949's
    shortest form become constant bounds. Past the end of ``p`` an index raises
    IndexError (struct.error for a wide argument), which the function returns None for.
    """
    lines = [f"{pad}b = p[i]"]
    for major in (0, 1):     # unsigned, negative (value -1 - argument)
        for first, last, info, width in _ARGUMENTS:
            if major == 0:
                low, high = max(lo, first), min(hi, last)
            else:
                low, high = max(lo, -1 - last), min(hi, -1 - first)
            if low > high:
                continue
            keyword = "if" if len(lines) == 1 else "elif"
            if info is None:     # the value is the head's own 5 bits
                if major == 0:
                    cond = f"b <= {high}" if low == 0 else f"{low} <= b <= {high}"
                    value = "b"
                else:            # heads 0x20..0x37 are -1..-24
                    cond = f"{0x1F - high} <= b <= {0x1F - low}"
                    value = f"{0x1F} - b"
                lines += [f"{pad}{keyword} {cond}:", f"{pad}    {var} = {value}",
                          f"{pad}    i += 1"]
                continue
            value = _argument("i", width)
            if major == 1:
                value = f"-1 - ({value})"
            # Checks beyond what the argument's width gives: the low bound of an
            # unsigned value and the high one of a negative value are always needed
            # (shortest form: a value the narrower heads could carry is outside the subset).
            if major == 0:
                checks = [f"{var} < {low}"] + ([f"{var} > {high}"] if high < last else [])
            else:
                checks = [f"{var} > {high}"] + ([f"{var} < {low}"] if low > -1 - last else [])
            lines += [f"{pad}{keyword} b == {(major << 5) | info}:",
                      f"{pad}    {var} = {value}", f"{pad}    i += {1 + width}",
                      f"{pad}    if {' or '.join(checks)}:", f"{pad}        return None"]
    if nullable:
        keyword = "if" if len(lines) == 1 else "elif"
        lines += [f"{pad}{keyword} b == {_NULL}:", f"{pad}    {var} = None", f"{pad}    i += 1"]
    if len(lines) == 1:   # a field no value can fill: no payload of this length is valid
        return [f"{pad}return None"]
    return [*lines, f"{pad}else:", f"{pad}    return None"]


def _series(var: str, lo: int, hi: int, min_len: int, max_len: int, pad: str) -> list[str]:
    """Lines that read an array of min_len..max_len integers in lo..hi into ``var``.

    Unrolled up to ``_UNROLL`` elements: element j is read into ``x<j>`` one
    level deeper than element j - 1, and the list is one display at the level
    where the count ends. A loop with ``append`` costs about as much per element
    as reading it (docs/performance.md).
    """
    lines = [f"{pad}b = p[i]",
             f"{pad}if {_ARRAY + min_len} <= b <= {_ARRAY + min(max_len, 23)}:",
             f"{pad}    n = b - {_ARRAY}", f"{pad}    i += 1"]
    if max_len >= 24:
        lines += [f"{pad}elif b == {_ARRAY_1}:", f"{pad}    n = p[i + 1]", f"{pad}    i += 2",
                  f"{pad}    if n < {max(min_len, 24)} or n > {max_len}:",
                  f"{pad}        return None"]
    lines += [f"{pad}else:", f"{pad}    return None"]
    if max_len > _UNROLL:
        return [*lines, f"{pad}{var} = []", f"{pad}append = {var}.append",
                f"{pad}for _ in range(n):", *_integer("x", lo, hi, False, pad + "    "),
                f"{pad}    append(x)"]
    indent = pad
    for j in range(max_len):
        if j >= min_len:
            items = ", ".join(f"x{k}" for k in range(j))
            lines += [f"{indent}if n == {j}:", f"{indent}    {var} = [{items}]",
                      f"{indent}else:"]
            indent += "    "
        lines += _integer(f"x{j}", lo, hi, False, indent)
    items = ", ".join(f"x{k}" for k in range(max_len))
    return [*lines, f"{indent}{var} = [{items}]"]


def decoder_source(kind_id: int) -> str:
    """The source of kind ``kind_id``'s decoder (see the top of this file).

    ``decode(p, device_id, fcnt, tag_len)`` returns ``protocol.frame.decoded``'s
    dict for the payload ``p``, or None when the protocol might reject it. The
    source holds only numbers and names from the kinds table (names quoted with
    repr()).
    """
    _kid, name, fields = kinds.table_entry(kind_id)
    if len(fields) > 23:
        raise ValueError(f"kind {name}: more fields than one array head holds")
    required = sum(1 for f in fields if not f[8] & kinds.OPTIONAL)
    pad = " " * 8

    def result(count: int) -> str:
        values = ", ".join(f"{f[0]!r}: v{pos}" for pos, f in enumerate(fields[:count]))
        return (f"return {{'kind': {name!r}, 'kind_id': {kind_id!r}, 'device_id': device_id, "
                f"'fcnt': fcnt, 'tag_len': tag_len, 'values': {{{values}}}}}")

    lines = ["def decode(p, device_id, fcnt, tag_len):",
             "    try:",
             f"{pad}k = p[0] - {_ARRAY}",
             f"{pad}if k < {required} or k > {len(fields)}:",
             f"{pad}    return None",
             f"{pad}i = 1"]
    for pos, field in enumerate(fields):
        if pos >= required:       # the payload may end before this field
            lines += [f"{pad}if k == {pos}:", f"{pad}    if i != len(p):",
                      f"{pad}        return None", f"{pad}    {result(pos)}"]
        lo, hi = kinds.field_range(field)
        if field[1] == "series":
            lines += _series(f"v{pos}", lo, hi, field[7][0], field[7][1], pad)
        else:
            lines += _integer(f"v{pos}", lo, hi, bool(field[8] & kinds.NULLABLE), pad)
    lines += [f"{pad}if i != len(p):", f"{pad}    return None", f"{pad}{result(len(fields))}",
              "    except (IndexError, struct.error):",
              "        return None"]
    return "\n".join(lines) + "\n"


def _decoder(kind_id: int) -> Decoder:
    """Kind ``kind_id``'s decoder, compiled from ``decoder_source``."""
    namespace: dict[str, Any] = {"struct": struct, "_U32": struct.Struct(">I").unpack_from,
                                 "_U64": struct.Struct(">Q").unpack_from}
    exec(compile(decoder_source(kind_id), f"<fastframe kind {kind_id}>", "exec"), namespace)
    decode: Decoder = namespace["decode"]
    return decode


def decoder_spec(kind_id: int) -> tuple[str, int, tuple[tuple[str, int, int, bool, bool, int,
                                                               int], ...]]:
    """The compiled decoder's spec of kind ``kind_id``, from the kinds table:
    (name, kind id, ((field name, lowest, highest, nullable, optional, series'
    shortest length or -1, series' longest length or -1), ...))."""
    _kid, name, fields = kinds.table_entry(kind_id)
    spec = []
    for field in fields:
        lo, hi = kinds.field_range(field)
        low, high = field[7] if field[1] == "series" else (-1, -1)
        spec.append((field[0], lo, hi, bool(field[8] & kinds.NULLABLE),
                     bool(field[8] & kinds.OPTIONAL), low, high))
    return name, kind_id, tuple(spec)


def _compiled(kind_id: int) -> Decoder | None:
    """Kind ``kind_id``'s decoder from the C extension (gateway/_fastframe.c), or None
    where the extension is not built (or not wanted: ``KNUTE_FAST_PATH=python``), or its
    spec is one the C walk does not take (a range beyond 64 bits, an optional field
    before a required one): that kind then keeps its generated Python decoder, which
    answers the same."""
    if _C is None:
        return None
    try:
        decode: Decoder = _C.Decoder(*decoder_spec(kind_id))
    except (ValueError, OverflowError):
        return None
    return decode


# The compiled walk, where it is built (gateway/fastwalk.py says how it is found)
_C = fastwalk.EXTENSION


class _Kind:
    """What the fast path needs of one kind: its name and its decoder (the compiled one
    where the extension is built, else the generated Python one, ``decode_python``).

    Where the compiled one is built, the Python one is generated on first use of
    ``decode_python`` (the tests and the benchmarks compare the two): compiling every
    kind's source was a tenth of a gateway's start-up imports, for a decoder it
    never runs.
    """

    __slots__ = ("_python", "compiled", "decode", "kind_id", "name")

    def __init__(self, kind_id: int, name: str) -> None:
        self.kind_id = kind_id
        self.name = name
        compiled = _compiled(kind_id)
        self.compiled = compiled is not None
        self._python: Decoder | None = None if compiled is not None else _decoder(kind_id)
        self.decode: Decoder = compiled or self.decode_python

    @property
    def decode_python(self) -> Decoder:
        """The generated Python decoder of this kind."""
        if self._python is None:
            self._python = _decoder(self.kind_id)
        return self._python


KINDS: dict[int, _Kind] = {entry[0]: _Kind(entry[0], entry[1]) for entry in kinds.TABLE}

# Which payload walk the fast path runs: "c" (every kind compiled) or "python".
# `knute gateway check` and `knute bench protocol --json` report it.
FAST_PATH = "c" if all(kind.compiled for kind in KINDS.values()) else "python"

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

    gateway.pipeline.Pipeline.decide has these lines written out (one call less per frame).
    """
    kind = KINDS.get(kind_id)
    if kind is not None:
        fast = kind.decode(plain, device_id, fcnt, tag_len)
        if fast is not None:
            return fast
    slow: dict[str, Any] = pframe.decoded(kind_id, device_id, fcnt, tag_len, plain)
    return slow
