"""gateway.fastframe answers exactly as protocol.frame does: same values, same reasons.

Every property runs against both payload walks, the generated Python decoders and
the compiled ones (gateway/_fastframe.c, where the extension is built), and
against ``protocol.frame``.
"""

from __future__ import annotations

import importlib
import struct
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.gateway import fastframe
from knute.protocol import cbor, frame, kinds
from knute.protocol.errors import FrameError


def _walks() -> dict[str, dict[int, fastframe.Decoder]]:
    """Each payload walk by name: kind id -> decoder."""
    walks = {"python": {kid: kind.decode_python for kid, kind in fastframe.KINDS.items()}}
    try:
        compiled: Any = importlib.import_module("knute.gateway._fastframe")
    except ImportError:    # not built here: the Python walk alone (test_fastframe_ext.py)
        return walks
    walks["c"] = {kid: compiled.Decoder(*fastframe.decoder_spec(kid)) for kid in fastframe.KINDS}
    return walks


WALKS = _walks()


def fast(kind_id: int, plain: bytes) -> list[dict[str, Any] | None]:
    """Every walk's answer for ``plain`` (the decoded dict, or None: left to the protocol)."""
    return [walk[kind_id](plain, 7, 9, 4) for walk in WALKS.values()]


def outcome(fn: Any, *args: Any) -> Any:
    """fn's result (repr, so 1 and True differ) or its FrameError reason."""
    try:
        return ("ok", repr(fn(*args)))
    except FrameError as exc:
        return ("error", exc.reason)


def same_payload(kind_id: int, plain: bytes) -> None:
    expected = outcome(frame.decoded, kind_id, 7, 9, 4, plain)
    assert outcome(fastframe.decoded, kind_id, 7, 9, 4, plain) == expected
    answers = fast(kind_id, plain)
    for answer in answers:   # each walk: the protocol's dict, or None
        assert answer is None or ("ok", repr(answer)) == expected, (answer, expected)
    assert len({repr(answer) for answer in answers}) == 1, answers   # and the same one
    assert (outcome(fastframe.open_payload, kind_id, plain)
            == outcome(frame.open_payload, kind_id, plain))


def field_values(draw: Any, kind_id: int) -> list[Any]:
    """A payload array of kind ``kind_id``: in range, at the edges and just past them."""
    fields = kinds.table_entry(kind_id)[2]
    required = sum(1 for f in fields if not f[8] & kinds.OPTIONAL)
    n = draw(st.integers(max(0, required - 1), len(fields) + 1))
    out: list[Any] = []
    for pos in range(n):
        if pos >= len(fields):
            out.append(draw(st.integers(0, 30)))
            continue
        field = fields[pos]
        lo, hi = kinds.field_range(field)
        number = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, lo - 1, hi + 1]),
                           st.integers(-(2**64), 2**64 - 1))
        if field[1] == "series":
            low, high = field[7]
            value: Any = draw(st.lists(number, min_size=max(0, low - 1), max_size=high + 1))
        else:
            value = draw(number)
        if draw(st.integers(0, 9)) == 0:
            value = draw(st.sampled_from([None, True, False, b"\x01", "a", 1.5, {1: 2}, []]))
        out.append(value)
    return out


def encode_any(value: Any) -> bytes:
    """Shortest-form CBOR of ints, None, bools, lists (cbor2 for the rest)."""
    if type(value) is int and -(2**64) <= value < 2**64:
        return cbor.encode(value)
    if isinstance(value, list):
        n = len(value)
        head = cbor.encode(n)
        return bytes([head[0] | 0x80]) + head[1:] + b"".join(encode_any(v) for v in value)
    return bytes(cbor2.dumps(value))


@st.composite
def payloads(draw: Any) -> tuple[int, bytes]:
    kind_id = draw(st.sampled_from([entry[0] for entry in kinds.TABLE]))
    return kind_id, encode_any(field_values(draw, kind_id))


@settings(max_examples=600)
@given(payloads())
def test_same_answer_on_payloads_near_the_kinds_table(case: tuple[int, bytes]) -> None:
    same_payload(*case)


@settings(max_examples=500)
@given(payloads(), st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=3),
       st.integers(-3, 3))
def test_same_answer_on_mutated_payloads(case: tuple[int, bytes], flips: list[tuple[int, int]],
                                         cut: int) -> None:
    kind_id, plain = case
    bad = bytearray(plain)
    for pos, xor in flips:
        if bad:
            bad[pos % len(bad)] ^= xor
    if cut < 0:
        bad = bad[:cut]
    elif cut > 0:
        bad += bytes(range(cut))
    same_payload(kind_id, bytes(bad))


@settings(max_examples=500)
@given(st.sampled_from([1, 2]), st.binary(max_size=60))
def test_same_answer_on_random_payloads(kind_id: int, plain: bytes) -> None:
    same_payload(kind_id, plain)


def non_shortest(value: int) -> list[bytes]:
    """Longer heads for the same unsigned value (the subset rejects them)."""
    out = []
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        try:
            longer = bytes([info]) + struct.pack(fmt, value)
        except struct.error:
            continue
        if len(longer) > len(cbor.encode(value)):
            out.append(longer)
    return out


@settings(max_examples=300)
@given(index=st.integers(0, 0xFFFFFFFF), battery=st.integers(0, 20),
       profile=st.lists(st.integers(0, 0xFFFFFF), min_size=1, max_size=24),
       max_flow=st.one_of(st.none(), st.integers(0, 0xFFFFFF)))
def test_every_valid_payload_takes_the_fast_path(index: int, battery: int, profile: list[int],
                                                 max_flow: int | None) -> None:
    values: dict[str, Any] = {"index": index, "profile_end_h": 3, "alarms": 5,
                              "battery": battery, "profile": profile}
    if max_flow is not None:
        values["max_flow"] = max_flow
    plain = cbor.encode(kinds.pack_id(1, values))
    # Not just the same answer by falling back: the generated decoder itself takes it.
    assert None not in fast(1, plain)
    assert fastframe.open_payload(1, plain) == values
    # The same index in a longer head than needed is outside the subset.
    head = cbor.encode(index)
    for longer in non_shortest(index):
        bad = plain.replace(head, longer, 1)
        assert fast(1, bad) == [None] * len(WALKS)
        same_payload(1, bad)


@settings(max_examples=300)
@given(st.lists(st.one_of(st.none(), st.integers(-500, 21000)), min_size=7, max_size=8))
def test_air_payloads_with_nulls(values: list[int | None]) -> None:
    plain = encode_any(values)
    same_payload(2, plain)
    fields = kinds.table_entry(2)[2]
    valid = True
    for field, value in zip(fields, values, strict=False):
        lo, hi = kinds.field_range(field)
        if value is None:
            valid = valid and bool(field[8] & kinds.NULLABLE)
        else:
            valid = valid and lo <= value <= hi
    assert [answer is not None for answer in fast(2, plain)] == [valid] * len(WALKS)


# Where one head gives way to the next (RFC 8949 section 4.2.1), for both signs.
EDGES = sorted({v for e in (0, 23, 24, 255, 256, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000)
                for v in (e - 1, e, e + 1, -e - 1, -e, -e - 2)})


def test_every_head_of_every_field_at_its_edges() -> None:
    # Each field of each kind at every head boundary and at its own range's edges,
    # in shortest form and one head longer, alone in an otherwise valid payload: the
    # generated decoder answers exactly as the protocol does, and takes every valid one.
    for kind_id, _name, fields in kinds.TABLE:
        required = sum(1 for f in fields if not f[8] & kinds.OPTIONAL)
        base: list[Any] = []
        for field in fields[:len(fields)]:
            lo, hi = kinds.field_range(field)
            base.append([lo] * field[7][0] if field[1] == "series" else lo)
        for pos, field in enumerate(fields):
            lo, hi = kinds.field_range(field)
            for value in sorted({*EDGES, lo - 1, lo, hi, hi + 1}):
                for count in {max(required, pos + 1), len(fields)}:
                    payload = list(base[:count])
                    payload[pos] = [value] * field[7][1] if field[1] == "series" else value
                    plain = encode_any(payload)
                    same_payload(kind_id, plain)
                    taken = [answer is not None for answer in fast(kind_id, plain)]
                    assert taken == [lo <= value <= hi] * len(WALKS), (kind_id, pos, value)
                    if value >= 0:
                        for longer in non_shortest(value):
                            same_payload(kind_id, plain.replace(encode_any(value), longer, 1))


def test_series_lengths_in_both_array_heads() -> None:
    # A series of every length up to one past its longest, its length in the head
    # (up to 23) or in the byte after it (0x98: shortest form only from 24 on).
    for kind_id, _name, fields in kinds.TABLE:
        for pos, field in enumerate(fields):
            if field[1] != "series":
                continue
            lo, _hi = kinds.field_range(field)
            low, high = field[7]
            head = [[lo] * f[7][0] if f[1] == "series" else kinds.field_range(f)[0]
                    for f in fields[:pos]]
            for n in range(0, high + 2):
                prefix = encode_any(head)
                prefix = bytes([prefix[0] + 1]) + prefix[1:]     # one element more
                items = encode_any([lo] * n)[-n:] if n else b""
                for array in ({encode_any([lo] * n)[:-n or None]}
                              | ({b"\x98" + bytes([n])} if n < 256 else set())):
                    plain = prefix + array + items
                    same_payload(kind_id, plain)
                    taken = [answer is not None for answer in fast(kind_id, plain)]
                    shortest = array == encode_any([lo] * n)[:-n or None]
                    assert taken == [low <= n <= high and shortest] * len(WALKS), (pos, n, array)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_header_same_answer_on_random_bytes(buf: bytes) -> None:
    assert outcome(fastframe.parse_header, buf) == outcome(frame.parse_header, buf)


@settings(max_examples=500)
@given(st.integers(0, 255), st.binary(min_size=0, max_size=40))
def test_header_same_answer_for_every_control_byte(control: int, rest: bytes) -> None:
    buf = bytes([control]) + rest
    assert outcome(fastframe.parse_header, buf) == outcome(frame.parse_header, buf)


@given(st.integers(0, frame.MAX_DEVICE_ID), st.integers(0, frame.MAX_FCNT))
def test_nonce_layout_is_the_protocols(device_id: int, fcnt: int) -> None:
    assert fastframe.NONCE.pack(frame.DIR_UPLINK, device_id, fcnt) == frame.nonce(device_id,
                                                                                    fcnt)
