"""Canonical JSON: the fast encoder gives exactly the reference encoder's text, and both
follow RFC 8785 on the cases it spells out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.governance._canonical import canonical, reference_canonical

_scalars = (st.none() | st.booleans()
            | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text())
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30)


@given(json_values)
def test_the_fast_encoder_writes_exactly_what_the_reference_writes(value: Any) -> None:
    assert canonical(value) == reference_canonical(value)


@given(json_values)
def test_canonical_text_reads_back_as_the_same_value(value: Any) -> None:
    text = canonical(value)
    assert json.loads(text) == value
    assert canonical(json.loads(text)) == text


@pytest.mark.parametrize(("value", "text"), [
    ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
    ({"é": 1, "z": 2, "\U0001f600": 3}, '{"z":2,"é":1,"\U0001f600":3}'),
    ([1.0, -0.0, 1e21, 1e-7, 0.1, 2**60], "[1,0,1e+21,1e-7,0.1,1152921504606846976]"),
    ("tab\t\u0001\u2028/", '"tab\\t\\u0001\u2028/"'),
    ((1, "x"), '[1,"x"]'),
])
def test_known_values_have_their_rfc_8785_text(value: Any, text: str) -> None:
    assert canonical(value) == text


@pytest.mark.parametrize("value", [float("nan"), {"x": float("inf")}, {1: "x"}, {"x": b"y"}])
def test_what_is_not_json_is_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical(value)
