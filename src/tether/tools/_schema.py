from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import pydantic

from tether.types import JSONObject


def docstring_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary of a Google-style docstring and its ``Args:`` descriptions."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n", 1)[0].strip()
    params: dict[str, str] = {}
    match = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", doc, re.MULTILINE)
    if match:
        current = None
        for line in match.group(1).splitlines():
            item = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
            if item and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = item.group(1)
                params[current] = item.group(2).strip()
            elif current is not None and line.strip():
                params[current] += " " + line.strip()
    return summary, params


def arguments_model(fn: Callable[..., Any], name: str, *, skip: Callable[[Any], bool],
                    ) -> tuple[type[pydantic.BaseModel], list[str]]:
    """A pydantic model of ``fn``'s parameters, leaving out those ``skip`` rejects.

    Returns the model and the names of the skipped (injected) parameters.
    """
    hints = typing.get_type_hints(fn)
    _, descriptions = docstring_parts(fn)
    fields: dict[str, Any] = {}
    skipped: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        if skip(annotation):
            skipped.append(param.name)
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, pydantic.Field(
            default, description=descriptions.get(param.name)))
    model = pydantic.create_model(
        f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    return model, skipped


def json_schema(model: type[pydantic.BaseModel]) -> JSONObject:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def explain(error: pydantic.ValidationError) -> str:
    """A validation failure as one line a model (or a person) can act on."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        got = f" (got {item['input']!r})" if item["type"] != "missing" else ""
        parts.append(f"{where}: {item['msg']}{got}")
    return "; ".join(parts)
