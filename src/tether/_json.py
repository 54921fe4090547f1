"""JSON encoding for journal payloads: compact, canonical for digests, strict about types.

Journal values are JSON, never pickle: a journal is data that any version of Tether (or a
person with ``sqlite3``) can read, and loading it runs no code.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
from typing import Any

from tether.types import JSON


def _default(value: object) -> object:
    # Values agent and tool authors commonly return; anything else is a clear error.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic models, without importing pydantic here
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable; return JSON-able data "
                    "(dict, list, str, int, float, bool, None, a dataclass or a pydantic model)")


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default,
                            allow_nan=False)
_canonical = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default,
                              allow_nan=False, sort_keys=True)
_decoder = json.JSONDecoder()

encode = _encoder.encode
"""Compact JSON text of a value (raises TypeError/ValueError for what JSON cannot hold)."""

decode = _decoder.decode
"""Parse JSON text."""


def normalize(value: Any) -> JSON:
    """The value as it will read back from the journal (tuples become lists, models dicts).

    Live and replayed runs must see identical values, so live results pass through this too.
    """
    if value is None or type(value) in (str, int, bool):
        return value  # type: ignore[no-any-return]  # fast path: already canonical
    return decode(encode(value))  # type: ignore[no-any-return]


def digest(value: Any) -> str:
    """A short stable digest of a request, to tell two effects apart on replay."""
    return hashlib.sha256(_canonical.encode(value).encode()).hexdigest()[:16]
