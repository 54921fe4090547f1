"""Canonical JSON (RFC 8785 style) and keyed digests, for audit records.

A verifier in any language must re-derive the exact bytes that were hashed, so records are
encoded one way only: keys sorted by code point, no whitespace, UTF-8 as is, integers plain,
and floats in the shortest form that reads back the same (integral floats as integers, as
ECMAScript prints them). Python's ``json`` with sorted keys differs from RFC 8785 only on
floats, which is what ``_number`` handles.

Records are encoded on every governed effect, so the common case goes through orjson (keys
sorted by UTF-8 bytes, which is code point order; the same escapes as ``json``), with each
float handed over already in its canonical text. Only plain ``dict``, ``list``, ``tuple``,
``str``, ``int``, ``bool``, ``None`` and ``float`` take that path; anything else (a subclass,
an integer beyond 64 bits, a lone surrogate) takes the reference encoder below, which gives
the same text where both apply (a property test holds them to it) and names what it refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import orjson


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("audit records hold no NaN or infinity")
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    text = repr(value)
    if "e" in text:  # ECMAScript writes 1e+21 and 1e-7, Python 1e+21 and 1e-07
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def _encode(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool | str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"audit record keys are strings, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} cannot go into an audit record")


class _Unusual(Exception):
    """A value the fast path leaves to the reference encoder."""


_PLAIN = frozenset({str, int, bool, type(None)})


def _prepared(value: Any) -> Any:
    """``value`` with each float replaced by its canonical text (an orjson fragment); the
    same object when it holds no float. Raises ``_Unusual`` for anything but plain JSON."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        return orjson.Fragment(_number(value))
    if kind is dict:
        changed = None
        for key, item in value.items():
            if type(key) is not str:
                raise _Unusual
            prepared = _prepared(item)
            if prepared is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = prepared
        return value if changed is None else changed
    if kind is list or kind is tuple:
        items = [_prepared(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    raise _Unusual


def canonical(value: Any) -> str:
    """The canonical JSON text of a JSON value."""
    try:
        return orjson.dumps(_prepared(value), option=orjson.OPT_SORT_KEYS).decode()
    except (_Unusual, orjson.JSONEncodeError):
        return reference_canonical(value)


def reference_canonical(value: Any) -> str:
    """The canonical JSON text, encoded in pure Python (the definition ``canonical`` meets)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def keyed_digest(key: bytes, value: Any) -> str:
    """HMAC-SHA256 of a value's canonical JSON: proves what a call carried without keeping it
    (a plain hash of low-entropy arguments could be brute-forced; a tenant's key cannot)."""
    return hmac.new(key, canonical(value).encode(), hashlib.sha256).hexdigest()
