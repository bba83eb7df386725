"""Hypothesis strategies built from the kinds table, so a new kind is tested too."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from knute.protocol import kinds


def field_value(field: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any valid raw value of one field."""
    ftype = field["type"]
    base: st.SearchStrategy[Any]
    if ftype == "bits":
        base = st.integers(0, (1 << len(field["bits"])) - 1)
    elif ftype == "series":
        lo, hi = field["len"]
        base = st.lists(st.integers(field["min"], field["max"]), min_size=lo, max_size=hi)
    else:
        base = st.integers(field["min"], field["max"])
    if field.get("nullable"):
        base = st.none() | base
    return base


@st.composite
def readings(draw: st.DrawFn, kind_name: str) -> dict[str, Any]:
    """A dict of raw values for `kind_name`; trailing optional fields may be absent."""
    kind = kinds.KINDS[kinds.kind_id(kind_name)]
    values: dict[str, Any] = {}
    fields = kind["fields"]
    optional_tail = [f for f in fields if f.get("optional")]
    keep_optional = draw(st.integers(0, len(optional_tail)))
    for field in fields:
        if field.get("optional"):
            if keep_optional == 0:
                break
            keep_optional -= 1
        values[field["name"]] = draw(field_value(field))
    return values


KIND_NAMES = sorted(kinds.KIND_IDS)

frames_in = st.sampled_from(KIND_NAMES).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFF),
        readings(name),
        st.binary(min_size=16, max_size=16),
        st.sampled_from([4, 8]),
    )
)
