"""The decoder's own UTF-8 check accepts exactly what CPython's strict codec accepts.

The check exists because the unix port's bytes.decode is lax (tests/vectors/cbor.json
holds the cases both interpreters run); here CPython's codec is the oracle.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.protocol import cbor
from knute.protocol.errors import FrameError
from tests.budget import examples

# Bytes biased towards lead and continuation bytes, where the edge cases are.
utf8ish = st.lists(st.one_of(st.integers(0, 0x7F), st.integers(0x80, 0xBF),
                             st.integers(0xC0, 0xFF), st.sampled_from([0xE0, 0xED, 0xF0, 0xF4])),
                   max_size=12).map(bytes)


def _text_item(raw: bytes) -> bytes:
    assert len(raw) < 24
    return bytes((0x60 | len(raw),)) + raw


# Text of at most 12 bytes, biased to lead and continuation bytes: 400 fixed
# examples cover each UTF-8 error class (overlong, surrogate, truncated, above
# U+10FFFF) many times over. Nightly: 5,000.
@settings(max_examples=examples(ci=400, nightly=5000))
@given(st.one_of(utf8ish, st.binary(max_size=12), st.text(max_size=6).map(str.encode)))
def test_text_is_accepted_exactly_when_cpython_decodes_it(raw: bytes) -> None:
    try:
        expected = raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(FrameError) as err:
            cbor.decode(_text_item(raw))
        assert err.value.reason == "cbor_bad_text"
    else:
        assert cbor.decode(_text_item(raw)) == expected


@pytest.mark.parametrize("code_point", [0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF,
                                        0x10000, 0x10FFFF])
def test_boundary_code_points_decode(code_point: int) -> None:
    text = chr(code_point)
    assert cbor.decode(cbor.encode(text)) == text
