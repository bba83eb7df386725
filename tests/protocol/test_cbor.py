"""Property tests of the CBOR subset codec against cbor2."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knute.protocol import cbor
from knute.protocol.errors import FrameError
from tests.budget import examples

scalars = (
    st.integers(-(2**64), 2**64 - 1)
    | st.booleans()
    | st.none()
    | st.binary(max_size=40)
    | st.text(max_size=20)
)


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=5) | st.dictionaries(
        st.integers(0, 2**64 - 1), children, max_size=5
    )


values = st.recursive(scalars, _nested, max_leaves=20).filter(
    lambda v: _depth(v) <= cbor.MAX_DEPTH
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


# Every major type with each length class (inline, 1, 2, 4, 8 bytes) and nesting
# up to the depth bound: 60 fixed nested values reach all of them. Nightly: 2,000.
@settings(max_examples=examples(ci=60, nightly=2000))
@given(values)
def test_round_trip(value: Any) -> None:
    assert cbor.decode(cbor.encode(value)) == value


@given(values)
def test_encoding_equals_cbor2_canonical(value: Any) -> None:
    assert cbor.encode(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_decode_is_total_and_agrees_with_cbor2(data: bytes) -> None:
    try:
        ours = cbor.decode(data)
    except FrameError as err:
        assert err.reason.startswith("cbor_")
        return
    # Whatever we accept, cbor2 decodes to the same value and re-encodes identically.
    assert cbor2.loads(data) == ours
    assert cbor2.dumps(ours, canonical=True) == data


@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_rejected(value: Any, extra: bytes) -> None:
    with pytest.raises(FrameError) as err:
        cbor.decode(cbor.encode(value) + extra)
    assert err.value.reason in {"cbor_trailing"}


@given(values)
def test_every_truncation_is_rejected(value: Any) -> None:
    raw = cbor.encode(value)
    for cut in range(len(raw)):
        with pytest.raises(FrameError):
            cbor.decode(raw[:cut])


def test_nesting_limit() -> None:
    deep: Any = 0
    for _ in range(cbor.MAX_DEPTH):
        deep = [deep]
    assert cbor.decode(cbor.encode(deep)) == deep
    with pytest.raises(FrameError) as err:
        cbor.decode(b"\x81" + cbor.encode(deep))
    assert err.value.reason == "cbor_too_deep"


@pytest.mark.parametrize("bad", [1.5, {"a": 1}, {-1: 2}, {True: 1}, 2**64, -(2**64) - 1, object()])
def test_encoder_rejects_values_outside_the_subset(bad: Any) -> None:
    with pytest.raises(ValueError):
        cbor.encode(bad)


def test_frame_error_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError) as err:
        cbor.decode(b"\x18\x01")
    assert isinstance(err.value, FrameError)
    assert err.value.reason == "cbor_non_shortest"
