"""Canonical JSON (RFC 8785 style) and keyed digests, for audit records.

A verifier in any language must re-derive the exact bytes that were hashed, so records are
encoded one way only: keys sorted by code point, no whitespace, UTF-8 as is, integers plain,
and floats in the shortest form that reads back the same (integral floats as integers, as
ECMAScript prints them). Python's ``json`` with sorted keys differs from RFC 8785 only on
floats, which is what ``_number`` handles.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any


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


def canonical(value: Any) -> str:
    """The canonical JSON text of a JSON value."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def keyed_digest(key: bytes, value: Any) -> str:
    """HMAC-SHA256 of a value's canonical JSON: proves what a call carried without keeping it
    (a plain hash of low-entropy arguments could be brute-forced; a tenant's key cannot)."""
    return hmac.new(key, canonical(value).encode(), hashlib.sha256).hexdigest()
